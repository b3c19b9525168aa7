/**
 * Runs a command's action: output goes through `out`, and any error becomes one line on stderr
 * and an exit code (see errors.ts) instead of a stack trace. `--verbose` adds the stack. An
 * action that returns a number sets the exit code (e.g. `flotilla ssh` passes on ssh's).
 */
export type Run = (action: (out: (text: string) => void) => Promise<void | number>) => Promise<void>;
