/** A minimal structured logger: one line per event on stderr, `level msg key=value ...`. */
export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

function format(fields: Record<string, unknown>): string {
  return Object.entries(fields)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ` ${k}=${typeof v === "string" && !/\s|"/.test(v) ? v : JSON.stringify(v)}`)
    .join("");
}

/** A logger that writes to `write` (stderr by default). */
export function createLogger(
  base: Record<string, unknown> = {},
  write: (line: string) => void = (line) => process.stderr.write(line),
): Logger {
  const emit = (level: string, msg: string, fields?: Record<string, unknown>) =>
    write(`${new Date().toISOString()} ${level} ${msg}${format({ ...base, ...fields })}\n`);
  return {
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (f) => createLogger({ ...base, ...f }, write),
  };
}

/** A logger that discards everything, for tests. */
export const silentLogger: Logger = createLogger({}, () => {});
