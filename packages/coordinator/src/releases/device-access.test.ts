/**
 * Only approved devices may read their organization's releases: a pending, rejected or
 * decommissioned device keeps a session (to learn its fate) but gets no TUF metadata, no
 * artifact and nothing from the Nix cache. Every device-facing release route, against every
 * lifecycle state.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Lifecycle } from "../store/index.ts";
import { enrollTestDevice, startTestCoordinator, type TestCoordinator } from "../testing.ts";

const SHA = "a".repeat(64);

describe("device access to releases by lifecycle", () => {
  let t: TestCoordinator;
  let dev: Awaited<ReturnType<typeof enrollTestDevice>>;
  beforeAll(async () => {
    t = await startTestCoordinator();
    dev = await enrollTestDevice(t);
  });
  afterAll(async () => {
    dev.close();
    await t.close();
  });

  const routes = (orgId: string) => [
    { name: "TUF metadata", path: "/tuf/v1/metadata/root.json", headers: () => dev.device.headers },
    { name: "TUF timestamp", path: "/tuf/v1/metadata/timestamp.json", headers: () => dev.device.headers },
    { name: "a target's bytes", path: `/tuf/v1/targets/app/1/${SHA}.app.tar.gz`, headers: () => dev.device.headers },
    {
      name: "the Nix cache",
      path: `/nix/${orgId}/nix-cache-info`,
      headers: () => ({ authorization: `Basic ${Buffer.from(`device:${(dev.device.headers.authorization ?? "").slice("Bearer ".length)}`).toString("base64")}` }),
    },
  ];

  for (const lifecycle of ["pending", "rejected", "decommissioned", "approved"] satisfies Lifecycle[]) {
    it(`${lifecycle === "approved" ? "serves" : "refuses"} a ${lifecycle} device on every release route`, async () => {
      await t.coord.store.devices.updateDevice(dev.orgId, dev.deviceId, { lifecycle }, Date.now());
      for (const r of routes(dev.orgId)) {
        const res = await fetch(`${t.coord.url}${r.path}`, { headers: r.headers() });
        const body = await res.text();
        if (lifecycle === "approved") {
          expect(res.status, `${r.name}: ${body}`).not.toBe(403);
          expect(res.status, `${r.name}: ${body}`).not.toBe(401);
        } else {
          expect(res.status, `${r.name}: ${body}`).toBe(403);
          expect(body, r.name).toMatch(/approved/);
        }
      }
    });
  }
});
