import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { onAbort } from "@flotilla/protocol/agent";

/** How a command ended. `output` keeps the last lines of stderr for error messages. */
export interface RunResult {
  code: number;
  tail: string;
}

/**
 * Runs a program (no shell), handing each output line to `onLine`; resolves when it exits, with
 * code 124 when it was killed because `signal` aborted. Never rejects for a non-zero exit.
 */
export function runProgram(
  program: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; signal?: AbortSignal; onLine?: (stream: "stdout" | "stderr", line: string) => void },
): Promise<RunResult> {
  return new Promise((resolve) => {
    const tail: string[] = [];
    const child = spawn(program, args, { env: opts.env ?? process.env, cwd: opts.cwd ?? "/", stdio: ["ignore", "pipe", "pipe"] });
    const unlisten = opts.signal ? onAbort(opts.signal, () => child.kill("SIGKILL")) : () => undefined;
    for (const stream of ["stdout", "stderr"] as const) {
      createInterface({ input: child[stream] }).on("line", (line) => {
        if (stream === "stderr") {
          tail.push(line);
          if (tail.length > 5) tail.shift();
        }
        opts.onLine?.(stream, line);
      });
    }
    let settled = false;
    const done = (code: number, extra?: string) => {
      if (settled) return;
      settled = true;
      unlisten();
      if (extra) tail.push(extra);
      resolve({ code: opts.signal?.aborted ? 124 : code, tail: tail.join("\n") });
    };
    child.on("error", (err) => done(127, err.message));
    child.on("close", (code, sig) => done(code ?? (sig ? 128 : 1)));
  });
}
