/**
 * The process's last line of defence. Every stream, session and socket error is meant to be
 * handled where it arises; an error that reaches here is a bug. It is logged as one, with what
 * it was, so tests that watch a process's output fail on it. A long-running role (agent,
 * coordinator) keeps running when the error is a network one, which leaves nothing
 * half-done that the network's own retries do not redo; anything else ends the process
 * (exit code 70), and its supervisor (systemd, `flotilla up`) starts it again.
 */
import { ConnectError } from "@connectrpc/connect";

/** Node's error codes for a connection that failed or ended: safe to survive. */
const NETWORK_CODES = /^(ECONNRESET|ECONNREFUSED|ECONNABORTED|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|ERR_HTTP2_[A-Z_]+|ERR_STREAM_PREMATURE_CLOSE|ERR_SOCKET_[A-Z_]+)$/;

/** True for an error of the network (a socket, an HTTP/2 session or stream, a Connect call). */
export function isNetworkError(err: unknown): boolean {
  if (err instanceof ConnectError) return true;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && NETWORK_CODES.test(code);
}

function describe(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}${err.stack ? `\n${err.stack.split("\n").slice(1, 6).join("\n")}` : ""}`;
  return String(err);
}

/**
 * Installs handlers for uncaught exceptions and unhandled rejections. `longRunning` is true for
 * the agent and coordinator roles; a short command (the admin CLI) always ends, with one line.
 */
export function installSafetyNet(longRunning: () => boolean): void {
  const handle = (kind: string) => (err: unknown) => {
    const survive = longRunning() && isNetworkError(err);
    process.stderr.write(
      `${new Date().toISOString()} error ${kind} (a bug in flotilla; please report it)${survive ? ", carrying on" : ""}: ${describe(err)}\n`,
    );
    if (!survive) process.exit(70);
  };
  // A reader that went away (`flotilla device ls | head`) is not a bug: a short command ends
  // quietly, as Unix tools do; a long-running role keeps running without its stdout.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code !== "EPIPE") return handle("stdout error")(err);
    if (!longRunning()) process.exit(0);
  });
  process.on("uncaughtException", handle("uncaught exception"));
  process.on("unhandledRejection", handle("unhandled rejection"));
}
