/**
 * A PostgreSQL server of the test's own: `initdb` and `pg_ctl` from the installed server, in a
 * temporary folder, on its own port. Tests that stop and restart a database use this one, never
 * the shared server other tests run on.
 */
import { execFile } from "node:child_process";
import { chmod, chown, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort } from "@flotilla/protocol/testing";

const run = promisify(execFile);

/** The installed server's bin folder (e.g. /usr/lib/postgresql/15/bin), or undefined. */
export async function postgresBinDir(): Promise<string | undefined> {
  try {
    const versions = (await readdir("/usr/lib/postgresql")).sort((a, b) => Number(b) - Number(a));
    return versions[0] ? `/usr/lib/postgresql/${versions[0]}/bin` : undefined;
  } catch {
    return undefined;
  }
}

export class PrivatePostgres {
  private constructor(
    private readonly bin: string,
    private readonly dir: string,
    readonly port: number,
    /** The user the server runs as: PostgreSQL refuses to run as root. */
    private readonly osUser: string | undefined,
  ) {}

  /** postgres://postgres@127.0.0.1:PORT/postgres */
  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  /** Creates and starts a new server; `close()` stops it and removes its folder. */
  static async start(): Promise<PrivatePostgres> {
    const bin = await postgresBinDir();
    if (!bin) throw new Error("no PostgreSQL server installed under /usr/lib/postgresql");
    const dir = await mkdtemp(join(tmpdir(), "flotilla-pg-"));
    const osUser = process.getuid?.() === 0 ? "postgres" : undefined;
    if (osUser) {
      const { stdout } = await run("id", ["-u", osUser]);
      const { stdout: gid } = await run("id", ["-g", osUser]);
      await chown(dir, Number(stdout), Number(gid));
    }
    await chmod(dir, 0o700);
    const pg = new PrivatePostgres(bin, dir, await freePort(), osUser);
    await pg.exec("initdb", ["-D", join(dir, "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
    await pg.startServer();
    return pg;
  }

  private async exec(program: string, args: string[]): Promise<void> {
    const cmd = join(this.bin, program);
    if (this.osUser) await run("runuser", ["-u", this.osUser, "--", cmd, ...args], { cwd: this.dir });
    else await run(cmd, args, { cwd: this.dir });
  }

  /** Starts the server and waits until it accepts connections. */
  async startServer(): Promise<void> {
    await this.exec("pg_ctl", [
      "-D", join(this.dir, "data"),
      "-l", join(this.dir, "server.log"),
      "-o", `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=off`,
      "-w", "start",
    ]);
  }

  /** Stops the server (fast: open sessions are ended, as an administrator's restart does). */
  async stopServer(): Promise<void> {
    await this.exec("pg_ctl", ["-D", join(this.dir, "data"), "-m", "fast", "-w", "stop"]);
  }

  async close(): Promise<void> {
    await this.stopServer().catch(() => {});
    await rm(this.dir, { recursive: true, force: true });
  }
}
