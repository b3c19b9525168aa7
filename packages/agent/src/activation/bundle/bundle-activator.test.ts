import { spawn } from "node:child_process";
import { lstat, readdir, readlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { silentLogger } from "@flotilla/protocol";
import { freePort, waitFor } from "@flotilla/protocol/testing";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { BundleActivator } from "./bundle-activator.ts";
import {
  makeBundle,
  processesUnder,
  RecordedEvents,
  served,
  serverBundle,
  serviceMeta,
  sha256File,
} from "./testing/fixtures.ts";

const tmp = useTempDir("flotilla-bundle-");
let work: string;
let root: string;
let activator: BundleActivator;
let events: RecordedEvents;
const signal = new AbortController().signal;

function newActivator(): BundleActivator {
  return new BundleActivator({
    dir: root,
    log: silentLogger,
    env: { PATH: `${dirname(process.execPath)}:/usr/bin:/bin` },
    backoffMinMs: 50,
    backoffMaxMs: 500,
    killGraceMs: 2_000,
    health: { defaultUpMs: 500, retryMs: 100 },
  });
}

beforeEach(async () => {
  work = tmp.path;
  root = join(work, "bundles");
  activator = newActivator();
  events = new RecordedEvents();
});

afterEach(async () => {
  await activator.close();
  expect(await processesUnder(root)).toEqual([]);
});

async function current(name: string): Promise<string | undefined> {
  return readlink(join(root, name, "current")).catch(() => undefined);
}

describe("bundle activation", () => {
  it("installs a bundle: unpacked under releases/, current points at it, and its process answers healthy", async () => {
    const port = await freePort();
    const art = await serverBundle(work, "v1", { port });
    const meta = serviceMeta("web", "1.0.0", 1, port);
    const out = await activator.activate({ meta, sha256: art.sha256, artifactPath: art.path }, events, signal);

    expect(out).toEqual({ outcome: "healthy", current: { name: "web", version: "1.0.0", counter: 1, sha256: art.sha256 } });
    const id = `1-${art.sha256.slice(0, 12)}`;
    expect(await current("web")).toBe(join("releases", id));
    expect((await lstat(join(root, "web", "releases", id, "server.mjs"))).isFile()).toBe(true);
    expect(await served(port)).toBe(`1.0.0 ${join(root, "web", "releases", id)}`);
    expect(events.steps.map((s) => s.step)).toEqual(["activating", "health-checking", "healthy"]);
    expect(events.lines).toContainEqual({ unit: "web", stream: "stdout", line: `listening on ${port}` });
    expect(await activator.installed()).toEqual([out.current]);
    expect(await processesUnder(root)).toHaveLength(1);
  });

  it("upgrades to a healthy second version: the first process is stopped and the second answers", async () => {
    const port = await freePort();
    const a1 = await serverBundle(work, "v1", { port });
    const a2 = await serverBundle(work, "v2", { port });
    await activator.activate({ meta: serviceMeta("web", "1.0.0", 1, port), sha256: a1.sha256, artifactPath: a1.path }, events, signal);
    const [firstPid] = await processesUnder(root);

    const out = await activator.activate({ meta: serviceMeta("web", "2.0.0", 2, port), sha256: a2.sha256, artifactPath: a2.path }, events, signal);

    expect(out.outcome).toBe("healthy");
    expect(out.current?.version).toBe("2.0.0");
    expect((await served(port))?.split(" ")[0]).toBe("2.0.0");
    const pids = await processesUnder(root);
    expect(pids).toHaveLength(1);
    expect(pids).not.toContain(firstPid);
    expect(await readlink(join(root, "web", "previous"))).toBe(join("releases", `1-${a1.sha256.slice(0, 12)}`));
  });

  const failures: [string, Record<string, unknown>, Record<string, unknown>, RegExp][] = [
    ["its HTTP health check answers 500", { health: 500 }, {}, /answered 500/],
    ["its health command exits 1", {}, { health: { command: "test -e ready.flag", windowSeconds: 4 } }, /health command exited with code 1/],
    ["its process exits at once", { exitAtOnce: true }, {}, /process exited with code 3/],
  ];
  it.each(failures)("rolls back an upgrade when %s, and the previous version answers again", async (_what, cfg, metaExtra, why) => {
    const port = await freePort();
    const a1 = await serverBundle(work, "v1", { port });
    const a2 = await serverBundle(work, "v2", { port, ...cfg });
    const v1 = await activator.activate({ meta: serviceMeta("web", "1.0.0", 1, port), sha256: a1.sha256, artifactPath: a1.path }, events, signal);

    const meta2 = serviceMeta("web", "2.0.0", 2, port, { restart: "never", ...metaExtra });
    const out = await activator.activate({ meta: meta2, sha256: a2.sha256, artifactPath: a2.path }, events, signal);

    expect(out.outcome).toBe("rolled-back");
    expect(out.outcome === "rolled-back" && out.error).toMatch(why);
    expect(out.current).toEqual(v1.current);
    expect(events.steps.at(-1)).toEqual({ step: "rolled-back", detail: expect.stringMatching(why) });
    expect(await current("web")).toBe(join("releases", `1-${a1.sha256.slice(0, 12)}`));
    expect((await served(port))?.split(" ")[0]).toBe("1.0.0");
    expect(await processesUnder(root)).toHaveLength(1);
    expect((await readdir(join(root, "web", "releases"))).sort()).toEqual([`1-${a1.sha256.slice(0, 12)}`, `1-${a1.sha256.slice(0, 12)}.json`]);
  });

  it("reports a failed first install whose health check fails, and leaves nothing running nor installed", async () => {
    const port = await freePort();
    const art = await serverBundle(work, "v1", { port, health: 503 });
    const out = await activator.activate({ meta: serviceMeta("web", "1.0.0", 1, port), sha256: art.sha256, artifactPath: art.path }, events, signal);

    expect(out).toEqual({ outcome: "failed", error: expect.stringMatching(/answered 503/), current: undefined });
    expect(await processesUnder(root)).toEqual([]);
    expect(await served(port)).toBeUndefined();
    expect(await current("web")).toBeUndefined();
    expect(await activator.installed()).toEqual([]);
  });

  const escapes: [string, Record<string, string | { symlink: string }>, RegExp][] = [
    ["a ../ path", { "../evil.txt": "x" }, /escapes the release directory/],
    ["an absolute path", { [`/tmp/flotilla-abs-${process.pid}.txt`]: "x" }, /is absolute/],
    ["a symlink to an absolute path", { "etc": { symlink: "/etc" } }, /points at an absolute path/],
    ["a symlink climbing out", { "up": { symlink: "../../.." } }, /escapes the release directory/],
    ["a chain of symlinks that resolves outside", { "a/here": { symlink: "." }, "b": { symlink: "a/here/.." }, "c": { symlink: "b/.." } }, /symlink c resolves outside the release directory/],
  ];
  it.each(escapes)("refuses a bundle with %s, and switches nothing", async (_what, files, why) => {
    const port = await freePort();
    const a1 = await serverBundle(work, "v1", { port });
    await activator.activate({ meta: serviceMeta("web", "1.0.0", 1, port), sha256: a1.sha256, artifactPath: a1.path }, events, signal);
    const before = await current("web");
    const bad = await makeBundle(work, "bad", { "server.mjs": "", ...files });

    const out = await activator.activate({ meta: serviceMeta("web", "2.0.0", 2, port), sha256: bad.sha256, artifactPath: bad.path }, events, signal);

    expect(out.outcome).toBe("failed");
    expect(out.outcome === "failed" && out.error).toMatch(why);
    expect(out.current?.version).toBe("1.0.0");
    expect(await current("web")).toBe(before);
    expect((await served(port))?.split(" ")[0]).toBe("1.0.0");
    expect((await readdir(join(root, "web", "releases"))).filter((e) => !e.startsWith("1-"))).toEqual([]);
    expect(await lstat(join(work, "evil.txt")).catch(() => undefined)).toBeUndefined();
  });

  it("keeps only the current and previous releases after upgrades", async () => {
    const port = await freePort();
    const ids: string[] = [];
    for (const v of [1, 2, 3]) {
      const a = await serverBundle(work, `v${v}`, { port });
      ids.push(`${v}-${a.sha256.slice(0, 12)}`);
      const out = await activator.activate({ meta: serviceMeta("web", `${v}.0.0`, v, port), sha256: a.sha256, artifactPath: a.path }, events, signal);
      expect(out.outcome).toBe("healthy");
    }
    expect((await readdir(join(root, "web", "releases"))).sort()).toEqual([ids[1], `${ids[1]}.json`, ids[2], `${ids[2]}.json`]);
    expect(await readlink(join(root, "web", "previous"))).toBe(join("releases", ids[1]!));
  });

  it("installs a single executable as <dir>/<name> mode 0755 and runs it by default", async () => {
    const port = await freePort();
    const exe = join(work, "svc");
    const { writeFile } = await import("node:fs/promises");
    await writeFile(exe, `#!/bin/sh\necho "single $FLOTILLA_VERSION"\nexec node -e 'require("http").createServer((q,s)=>s.end("ok")).listen(${port},"127.0.0.1")'\n`);
    const meta = serviceMeta("svc", "0.1.0", 1, port, { run: undefined, singleFile: true, health: { http: `http://127.0.0.1:${port}/`, windowSeconds: 30 } });
    const out = await activator.activate({ meta, sha256: await sha256File(exe), artifactPath: exe }, events, signal);

    expect(out.outcome).toBe("healthy");
    const installed = join(root, "svc", "current", "svc");
    expect((await lstat(installed)).mode & 0o777).toBe(0o755);
    await waitFor("the single-file output", () => events.lines.find((l) => l.line === "single 0.1.0"));
    expect(await served(port)).toBe("ok");
  });

  it("recovers after a clean close by starting the current release again", async () => {
    const port = await freePort();
    const a1 = await serverBundle(work, "v1", { port });
    await activator.activate({ meta: serviceMeta("web", "1.0.0", 1, port), sha256: a1.sha256, artifactPath: a1.path }, events, signal);
    await activator.close();
    expect(await processesUnder(root)).toEqual([]);

    activator = newActivator();
    const outcomes = await activator.recover(events);
    expect(outcomes.get("web")).toMatchObject({ outcome: "healthy", current: { version: "1.0.0" } });
    await waitFor("the service to answer", () => served(port));
    expect(await processesUnder(root)).toHaveLength(1);
  });

  it("recovers by stopping an untracked copy of the service (no pidfile) before starting its own", async () => {
    const port = await freePort();
    const a1 = await serverBundle(work, "v1", { port });
    await activator.activate({ meta: serviceMeta("web", "1.0.0", 1, port), sha256: a1.sha256, artifactPath: a1.path }, events, signal);
    await activator.close();
    const releaseDir = join(root, "web", "releases", `1-${a1.sha256.slice(0, 12)}`);
    const stray = spawn(process.execPath, ["server.mjs"], {
      cwd: releaseDir,
      env: { FLOTILLA_RELEASE_DIR: releaseDir, FLOTILLA_VERSION: "stray" },
      detached: true,
      stdio: "ignore",
    });
    await waitFor("the stray copy to answer", async () => (await served(port))?.startsWith("stray"));

    activator = newActivator();
    const outcomes = await activator.recover(events);

    expect(outcomes.get("web")?.outcome).toBe("healthy");
    expect((await served(port))?.split(" ")[0]).toBe("1.0.0");
    const pids = await processesUnder(root);
    expect(pids).toHaveLength(1);
    expect(pids).not.toContain(stray.pid);
  });

  it("refuses a release with a lower counter than the installed one, unless it allows downgrades", async () => {
    const port = await freePort();
    const a5 = await serverBundle(work, "v5", { port });
    const a4 = await serverBundle(work, "v4", { port });
    await activator.activate({ meta: serviceMeta("web", "5.0.0", 5, port), sha256: a5.sha256, artifactPath: a5.path }, events, signal);

    const refused = await activator.activate({ meta: serviceMeta("web", "4.0.0", 4, port), sha256: a4.sha256, artifactPath: a4.path }, events, signal);
    expect(refused).toEqual({ outcome: "failed", error: "counter 4 is lower than the installed 5", current: expect.objectContaining({ version: "5.0.0" }) });
    expect((await served(port))?.split(" ")[0]).toBe("5.0.0");

    const allowed = await activator.activate({ meta: serviceMeta("web", "4.0.0", 4, port, { allowDowngrade: true }), sha256: a4.sha256, artifactPath: a4.path }, events, signal);
    expect(allowed.outcome).toBe("healthy");
    expect((await served(port))?.split(" ")[0]).toBe("4.0.0");
  });

  it("rolls back when the activation is aborted during its health checks", async () => {
    const port = await freePort();
    const a1 = await serverBundle(work, "v1", { port });
    const a2 = await serverBundle(work, "v2", { port, health: 500 });
    await activator.activate({ meta: serviceMeta("web", "1.0.0", 1, port), sha256: a1.sha256, artifactPath: a1.path }, events, signal);
    const ctl = new AbortController();
    const meta2 = serviceMeta("web", "2.0.0", 2, port, { health: { http: `http://127.0.0.1:${port}/healthz`, windowSeconds: 600 } });
    const pending = activator.activate({ meta: meta2, sha256: a2.sha256, artifactPath: a2.path }, events, ctl.signal);
    await waitFor("the new release's health checks", () => events.steps.filter((s) => s.step === "health-checking").length === 2);
    ctl.abort();

    const out = await pending;
    expect(out).toEqual({ outcome: "rolled-back", error: "activation aborted", current: expect.objectContaining({ version: "1.0.0" }) });
    expect((await served(port))?.split(" ")[0]).toBe("1.0.0");
  });

  it("treats activating the release that already runs as done, without restarting it", async () => {
    const port = await freePort();
    const a1 = await serverBundle(work, "v1", { port });
    const req = { meta: serviceMeta("web", "1.0.0", 1, port), sha256: a1.sha256, artifactPath: a1.path };
    await activator.activate(req, events, signal);
    const [pid] = await processesUnder(root);
    const again = await activator.activate(req, events, signal);
    expect(again.outcome).toBe("healthy");
    expect(await processesUnder(root)).toEqual([pid]);
  });

  it("is available on Linux, and has nothing installed at first", async () => {
    expect(await activator.available()).toBe(process.platform === "linux");
    expect(await activator.installed()).toEqual([]);
    expect(await activator.recover(events)).toEqual(new Map());
  });
});

describe("bundle control", () => {
  it("stops a release so that it stays stopped across recovery, starts it, restarts it with a new process", async () => {
    const port = await freePort();
    const art = await serverBundle(work, "v1", { port });
    await activator.activate({ meta: serviceMeta("web", "1.0.0", 1, port), sha256: art.sha256, artifactPath: art.path }, events, signal);
    const [first] = await processesUnder(root);

    await activator.control("web", "stop", { purgeData: false }, events);
    expect(await processesUnder(root)).toEqual([]);
    await activator.close();
    activator = newActivator();
    expect(await activator.recover(events)).toEqual(new Map());
    expect(await processesUnder(root)).toEqual([]);

    await activator.control("web", "start", { purgeData: false }, events);
    await waitFor("the release answering again", async () => (await served(port))?.startsWith("1.0.0"));
    const [started] = await processesUnder(root);
    expect(started).not.toBe(first);
    await activator.control("web", "restart", { purgeData: false }, events);
    await waitFor("a new process", async () => {
      const pids = await processesUnder(root);
      return pids.length === 1 && pids[0] !== started;
    });
    await activator.close();
    activator = newActivator();
    await activator.recover(events);
    expect(await processesUnder(root)).toHaveLength(1);
  });

  it("removes a release's files and keeps its data directory, or purges it too", async () => {
    const port = await freePort();
    const art = await serverBundle(work, "v1", { port });
    await activator.activate({ meta: serviceMeta("web", "1.0.0", 1, port), sha256: art.sha256, artifactPath: art.path }, events, signal);
    await activator.control("web", "remove", { purgeData: false }, events);
    expect(await processesUnder(root)).toEqual([]);
    expect(await readdir(join(root, "web"))).toEqual(["data"]);
    expect(await activator.installed()).toEqual([]);
    await expect(activator.control("web", "start", { purgeData: false }, events)).rejects.toThrow("no web release is installed");
    await activator.control("web", "remove", { purgeData: true }, events);
    expect(await readdir(root)).toEqual([]);
    // Removing what was never installed is done at once.
    await activator.control("other", "remove", { purgeData: false }, events);
  });
});
