import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { adminv1 } from "@flotilla/protocol";
import { describe, expect, it } from "vitest";
import { rolloutWithDevices } from "./pages.ts";

const names = Array.from({ length: 11 }, (_, i) => `d${String(i).padStart(2, "0")}`);

/** A coordinator of `names`: paging as the current one does, or (`paging: false`) as one from before pages, every device at once. */
function coordinator(paging: boolean) {
  const asked: adminv1.GetRolloutRequest[] = [];
  const client = {
    async getRollout(req: adminv1.GetRolloutRequest) {
      asked.push(req);
      const from = req.pageToken ? names.indexOf(req.pageToken) + 1 : 0;
      const size = paging ? req.pageSize || 1000 : names.length;
      const page = names.slice(from, from + size);
      const rollout = create(adminv1.RolloutSchema, { id: req.id, status: "running", devices: page.map((n) => ({ deviceId: `dev_${n}`, name: n })) });
      return { rollout, nextPageToken: paging && from + size < names.length ? page.at(-1)! : "" };
    },
  } as unknown as Client<typeof adminv1.RolloutService>;
  return { client, asked };
}

describe("a rollout's devices page by page", () => {
  it("follows every page, each device once, in as many requests as pages", async () => {
    const { client, asked } = coordinator(true);
    const r = await rolloutWithDevices(client, "ro_x", { pageSize: 4 });
    expect(r.devices.map((d) => d.name)).toEqual(names);
    expect(r.more).toBe(false);
    expect(asked.map((a) => a.pageToken)).toEqual(["", "d03", "d07"]);
  });

  it("stops at the limit, asks for no more than it keeps, and says that more follow", async () => {
    const { client, asked } = coordinator(true);
    const r = await rolloutWithDevices(client, "ro_x", { pageSize: 4, limit: 6 });
    expect(r.devices.map((d) => d.name)).toEqual(names.slice(0, 6));
    expect(r.more).toBe(true);
    expect(asked.map((a) => a.pageSize)).toEqual([4, 2]);
    expect((await rolloutWithDevices(coordinator(true).client, "ro_x", { pageSize: 4, limit: 11 })).more).toBe(false);
  });

  it("works against a coordinator from before pages: one answer with every device, cut to the limit", async () => {
    expect((await rolloutWithDevices(coordinator(false).client, "ro_x", { pageSize: 4 })).devices).toHaveLength(11);
    const cut = await rolloutWithDevices(coordinator(false).client, "ro_x", { limit: 5 });
    expect(cut.devices.map((d) => d.name)).toEqual(names.slice(0, 5));
    expect(cut.more).toBe(true);
  });
});
