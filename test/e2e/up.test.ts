import { freePort, waitFor } from "@flotilla/protocol/testing";
import { expect, it } from "vitest";
import { type DeviceJson } from "./support/fleet.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

it("`flotilla up` brings up a coordinator and an enrolled local agent, with the user logged in as owner", async () => {
  const dataDir = await sb.dir("flotilla-up-");
  const home = await sb.dir("flotilla-home-");
  const port = await freePort();
  const up = sb.spawn(["up", "--data-dir", dataDir, "--listen", `127.0.0.1:${port}`], { FLOTILLA_HOME: home }, "up");
  await up.waitForOutput(/Flotilla is up/);
  expect(up.stdout).toMatch(/flotilla agent --state-dir \S+ --join 'flotilla-join-v1\./);

  const device = await waitFor("the local device online", async () => {
    const r = await sb.run(["device", "ls", "--json"], { FLOTILLA_HOME: home });
    if (r.code !== 0) throw new Error(r.stderr);
    const list = JSON.parse(r.stdout) as DeviceJson[];
    return list.length === 1 && list[0]!.status === "online" ? list[0] : undefined;
  });
  expect(device.labels).toEqual({ local: "true" });

  // A second start reuses the data directory, the enrollment and the login.
  await up.stop();
  const again = sb.spawn(["up", "--data-dir", dataDir, "--listen", `127.0.0.1:${port}`], { FLOTILLA_HOME: home }, "up");
  await again.waitForOutput(/Flotilla is up/);
  const list = await waitFor("the same device online again", async () => {
    const r = await sb.run(["device", "ls", "--json"], { FLOTILLA_HOME: home });
    const l = r.code === 0 ? (JSON.parse(r.stdout) as DeviceJson[]) : [];
    return l.length === 1 && l[0]!.status === "online" ? l : undefined;
  });
  expect(list[0]!.id).toBe(device.id);
});

it("starts over after its data directory was removed, replacing the pin of the coordinator it created itself, while another coordinator at that address stays refused", async () => {
  const home = await sb.dir("flotilla-home-");
  const port = await freePort();
  const listen = `127.0.0.1:${port}`;
  const first = await sb.dir("flotilla-up-");
  const up = sb.spawn(["up", "--data-dir", first, "--listen", listen], { FLOTILLA_HOME: home }, "up");
  await up.waitForOutput(/Flotilla is up/);
  await up.stop();

  // The admin starts over in a fresh data directory: a new coordinator key at the same address.
  const second = await sb.dir("flotilla-up-");
  const again = sb.spawn(["up", "--data-dir", second, "--listen", listen], { FLOTILLA_HOME: home }, "up");
  await again.waitForOutput(/Flotilla is up/);
  expect(again.stdout).toMatch(/replaced the pin of the earlier coordinator at http:\/\/127\.0\.0\.1:\d+/);
  const devices = await waitFor("the new local device online", async () => {
    const r = await sb.run(["device", "ls", "--json"], { FLOTILLA_HOME: home });
    const l = r.code === 0 ? (JSON.parse(r.stdout) as DeviceJson[]) : [];
    return l.length === 1 && l[0]!.status === "online" ? l : undefined;
  });
  expect(devices).toHaveLength(1);
  await again.stop();

  // Any other coordinator answering at the pinned address is still refused.
  const other = sb.spawn(["coordinator", "--data-dir", await sb.dir("flotilla-coord-"), "--listen", listen], {}, "coordinator");
  const url = (await other.waitForOutput(/listening on (\S+)/))[1]!;
  const r = await sb.run(["--coordinator", url, "device", "ls"], { FLOTILLA_HOME: home });
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(/does not match the pinned key/);
});
