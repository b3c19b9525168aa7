import { readFileSync } from "node:fs";

/** Below this many open files a coordinator is warned: every connected device holds one socket. */
export const FEW_OPEN_FILES = 65_536;

/** The soft "Max open files" of /proc/PID/limits text; undefined when it says unlimited or nothing. */
export function openFilesLimit(limits: string): number | undefined {
  const m = /^Max open files\s+(\d+)\s/m.exec(limits);
  return m ? Number(m[1]) : undefined;
}

/**
 * A warning when this process may open fewer than {@link FEW_OPEN_FILES} files (Node raises its
 * soft limit to the hard one at start, so this is the hard limit the service manager gave), or
 * undefined. Linux only; elsewhere it stays silent.
 */
export function fileLimitWarning(readLimits: () => string = () => readFileSync("/proc/self/limits", "utf8")): string | undefined {
  let limit: number | undefined;
  try {
    limit = openFilesLimit(readLimits());
  } catch {
    return undefined;
  }
  if (limit === undefined || limit >= FEW_OPEN_FILES) return undefined;
  return `this process may open only ${limit} files: every connected device holds one, so about ${Math.max(0, limit - 1000)} devices can connect at once; raise the limit (systemd LimitNOFILE=, ulimit -n)`;
}
