/**
 * ListDevices pages against a real coordinator: every device once, in name order, with and
 * without a selector, and without page_size the whole list as older clients expect.
 */
import { generateIdentity } from "@flotilla/protocol";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { enrollDevice, SETUP_CODE, startTestCoordinator, type TestCoordinator } from "../testing.ts";

let t: TestCoordinator;
beforeEach(async () => {
  t = await startTestCoordinator();
});
afterEach(async () => {
  await t.close();
});

describe("ListDevices pages", () => {
  it("returns every device exactly once across pages, with and without a selector", async () => {
    const owner = await t.login(generateIdentity(), { setupCode: SETUP_CODE });
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await enrollDevice(t, owner, `box-${i}`)).id);
    for (const [i, id] of ids.entries()) {
      if (i % 2 === 0) await t.admin.updateDeviceLabels({ device: id, set: { even: "yes" } }, owner);
    }
    const all = async (selector: string) => {
      const names: string[] = [];
      let pageToken = "";
      let pages = 0;
      do {
        const page = await t.admin.listDevices({ selector, pageSize: 2, pageToken }, owner);
        expect(page.devices.length).toBeLessThanOrEqual(2);
        names.push(...page.devices.map((d) => d.name));
        pageToken = page.nextPageToken;
        pages++;
      } while (pageToken);
      return { names, pages };
    };
    const every = await all("");
    expect(every.names).toEqual(["box-0", "box-1", "box-2", "box-3", "box-4", "box-5", "box-6"]);
    expect(every.pages).toBe(4);
    expect((await all("even=yes")).names).toEqual(["box-0", "box-2", "box-4", "box-6"]);
    expect((await t.admin.listDevices({}, owner)).devices).toHaveLength(7);
    await expect(t.admin.listDevices({ pageSize: 2, pageToken: "garbage" }, owner)).rejects.toThrow(/invalid page_token/);
  });
});
