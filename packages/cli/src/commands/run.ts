/**
 * Runs a command's action: output goes through `out`, and any error becomes one line on stderr
 * and an exit code (see errors.ts) instead of a stack trace. `--verbose` adds the stack.
 */
export type Run = (action: (out: (text: string) => void) => Promise<void>) => Promise<void>;
