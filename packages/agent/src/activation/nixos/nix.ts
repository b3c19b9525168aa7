import { access, constants, mkdir, realpath, rename, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { runProgram, type RunResult } from "./run.ts";

type OnLine = (stream: "stdout" | "stderr", line: string) => void;

/** The Nix commands the NixOS activator runs, with the settings that make them safe here. */
export class NixTool {
  private readonly nix: string;
  private readonly nixEnv: string;

  constructor(
    private readonly opts: {
      /** Directory of `nix` and `nix-env`; unset: found on PATH. */
      binDir?: string;
      env?: NodeJS.ProcessEnv;
      /** Where the netrc with the session token is written (0600). */
      netrcPath: string;
      /** PEM certificates nix trusts for https (the coordinator's own, when self-signed). */
      caCertFile?: string;
    },
  ) {
    this.nix = opts.binDir ? join(opts.binDir, "nix") : "nix";
    this.nixEnv = opts.binDir ? join(opts.binDir, "nix-env") : "nix-env";
  }

  /** Whether `nix` runs at all. */
  async present(): Promise<boolean> {
    return (await runProgram(this.nix, ["--version"], { env: this.opts.env })).code === 0;
  }

  /**
   * Copies `storePath` and its closure from the binary cache into the local store with
   * signature checking on and only `trustedKeys` trusted: a path not signed by one of them, or
   * whose NAR does not match its signed hash, is refused by nix and nothing is added.
   */
  async fetch(cacheUrl: string, storePath: string, trustedKeys: string[], token: string, signal: AbortSignal, onLine: OnLine): Promise<RunResult> {
    await this.writeNetrc(cacheUrl, token);
    const args = [
      "copy",
      "--extra-experimental-features", "nix-command",
      "--option", "require-sigs", "true",
      "--option", "trusted-public-keys", trustedKeys.join(" "),
      "--option", "substituters", "",
      "--option", "netrc-file", this.opts.netrcPath,
      // Ask the cache itself: a path just published must not hide behind a cached "not there",
      // nor a narinfo this machine uploaded (unsigned) stand in for the signed one served.
      "--option", "narinfo-cache-negative-ttl", "0",
      "--option", "narinfo-cache-positive-ttl", "0",
      "--from", cacheUrl,
      storePath,
    ];
    // nix 2.x reads the CA bundle from the environment; `--option ssl-cert-file` comes too late.
    const env = this.opts.caCertFile ? { ...(this.opts.env ?? process.env), NIX_SSL_CERT_FILE: this.opts.caCertFile } : this.opts.env;
    return runProgram(this.nix, args, { env, signal, onLine });
  }

  /**
   * `nix path-info --json --recursive` of a path in the local store: what nix registered for
   * each path of its closure (NarHash, NarSize), printed as JSON on stdout.
   */
  async pathInfo(storePath: string): Promise<RunResult & { stdout: string }> {
    const out: string[] = [];
    const r = await runProgram(this.nix, ["path-info", "--extra-experimental-features", "nix-command", "--json", "--recursive", storePath], {
      env: this.opts.env,
      onLine: (stream, line) => {
        if (stream === "stdout") out.push(line);
      },
    });
    return { ...r, stdout: out.join("\n") };
  }

  /** Points the profile at `storePath` as a new generation. */
  setProfile(profile: string, storePath: string, onLine: OnLine): Promise<RunResult> {
    return runProgram(this.nixEnv, ["--profile", profile, "--set", storePath], { env: this.opts.env, onLine });
  }

  /** The store path the profile points at now, or undefined when there is none. */
  async current(profile: string): Promise<string | undefined> {
    try {
      const target = await realpath(profile);
      return /^\/nix\/store\/[0-9a-z]{32}-[^/]+$/.test(target) ? target : undefined;
    } catch {
      return undefined;
    }
  }

  /** Whether the profile's directory exists and is writable. */
  async profileWritable(profile: string): Promise<boolean> {
    try {
      await access(dirname(profile), constants.W_OK);
      return true;
    } catch {
      return false;
    }
  }

  private async writeNetrc(cacheUrl: string, token: string): Promise<void> {
    const host = new URL(cacheUrl).hostname.replace(/^\[|\]$/g, "");
    if (/\s/.test(token) || /\s/.test(host)) throw new Error("token or host contains whitespace");
    await mkdir(dirname(this.opts.netrcPath), { recursive: true, mode: 0o700 });
    const tmp = `${this.opts.netrcPath}.tmp`;
    await writeFile(tmp, `machine ${host}\nlogin flotilla\npassword ${token}\n`, { mode: 0o600 });
    await rename(tmp, this.opts.netrcPath);
  }
}
