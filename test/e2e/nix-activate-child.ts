/**
 * A stand-in agent for the crash tests: runs one NixOS activation whose confirm window never
 * closes by itself (the coordinator is never "reached"), so the test can kill it mid-window.
 * Arguments: one JSON object with the activator's options, the public key, the token and meta.
 */
import type { ReleaseMeta } from "@flotilla/protocol";
import { NixosActivator } from "@flotilla/agent/testing";

const cfg = JSON.parse(process.argv[2] ?? "{}") as { stateDir: string; cacheUrl: string; profile: string; publicKey: string; token: string; meta: ReleaseMeta; artifactPath?: string };
const activator = new NixosActivator({
  stateDir: cfg.stateDir,
  cacheUrl: cfg.cacheUrl,
  profile: cfg.profile,
  trustedPublicKeys: () => [cfg.publicKey],
  token: () => cfg.token,
  confirmWindowMs: 600_000,
  env: process.env,
});
await activator.activate(
  { meta: cfg.meta, sha256: "", artifactPath: cfg.artifactPath },
  {
    step: (step) => process.stdout.write(`step ${step}\n`),
    output: () => {},
    reachedCoordinator: (_since, signal) => new Promise((_resolve, reject) => signal.addEventListener("abort", () => reject(new Error("aborted")))),
  },
  new AbortController().signal,
);
