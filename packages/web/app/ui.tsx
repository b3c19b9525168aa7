/** Small pieces every page uses: routing, times, errors, loading, copying. */
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { useCallback, useEffect, useRef, useState, useSyncExternalStore, type ReactNode } from "react";
import { reason } from "./api.ts";

// --- routing: the History API, nothing more ---
const routeListeners = new Set<() => void>();
window.addEventListener("popstate", () => routeListeners.forEach((f) => f()));

export function navigate(to: string): void {
  history.pushState(null, "", to);
  routeListeners.forEach((f) => f());
  window.scrollTo(0, 0);
}

export function useLocation(): string {
  return useSyncExternalStore(
    (f) => (routeListeners.add(f), () => void routeListeners.delete(f)),
    () => location.pathname + location.search,
  );
}

export function Link(props: { to: string; children: ReactNode; className?: string; "aria-current"?: "page" | undefined }) {
  return (
    <a
      href={props.to}
      className={props.className}
      aria-current={props["aria-current"]}
      onClick={(e) => {
        if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
        e.preventDefault();
        navigate(props.to);
      }}
    >
      {props.children}
    </a>
  );
}

// --- times ---
export function toDate(t: Timestamp | Date | number | undefined): Date | undefined {
  if (t === undefined) return undefined;
  if (t instanceof Date) return t;
  if (typeof t === "number") return t > 0 ? new Date(t) : undefined;
  return t.seconds === 0n && t.nanos === 0 ? undefined : timestampDate(t);
}

export function relative(d: Date, now = Date.now()): string {
  const s = Math.round((d.getTime() - now) / 1000);
  const abs = Math.abs(s);
  const fmt = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  if (abs < 60) return fmt.format(s, "second");
  if (abs < 3600) return fmt.format(Math.round(s / 60), "minute");
  if (abs < 86400) return fmt.format(Math.round(s / 3600), "hour");
  return fmt.format(Math.round(s / 86400), "day");
}

/** "3 minutes ago", with the exact time on hover and for screen readers' dateTime. */
export function RelTime({ at }: { at: Timestamp | Date | number | undefined }) {
  const [, tick] = useState(0);
  useEffect(() => {
    const t = setInterval(() => tick((n) => n + 1), 15_000);
    return () => clearInterval(t);
  }, []);
  const d = toDate(at);
  if (!d) return <span className="muted">never</span>;
  return (
    <time dateTime={d.toISOString()} title={d.toLocaleString()}>
      {relative(d)}
    </time>
  );
}

// --- loading and errors ---
export function ErrorLine({ error }: { error: unknown }) {
  if (error === undefined || error === null || error === "") return null;
  return (
    <p className="error" role="alert">
      {typeof error === "string" ? error : reason(error)}
    </p>
  );
}

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

/** Runs `load` now, again when `deps` change, and every `everyMs` if given (a fallback to streams). */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[], everyMs?: number): Loaded<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<unknown>();
  const [loading, setLoading] = useState(true);
  const gen = useRef(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  const reload = useCallback(() => {
    const mine = ++gen.current;
    setLoading(true);
    loadRef
      .current()
      .then((d) => mine === gen.current && (setData(d), setError(undefined)))
      .catch((e: unknown) => mine === gen.current && setError(e))
      .finally(() => mine === gen.current && setLoading(false));
  }, []);
  useEffect(() => {
    reload();
    if (!everyMs) return;
    const t = setInterval(reload, everyMs);
    return () => clearInterval(t);
  }, deps);
  return { data, error, loading, reload };
}

/** A button that runs an action, shows that it runs, and shows its refusal or failure. */
export function Action(props: { label: string; run: () => Promise<unknown>; className?: string; confirm?: string; disabled?: boolean; ariaLabel?: string }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  return (
    <span className="action">
      <button
        type="button"
        className={props.className}
        disabled={busy || props.disabled}
        aria-label={props.ariaLabel}
        onClick={() => {
          if (props.confirm && !window.confirm(props.confirm)) return;
          setBusy(true);
          setError(undefined);
          props
            .run()
            .catch((e: unknown) => setError(e))
            .finally(() => setBusy(false));
        }}
      >
        {busy ? `${props.label}…` : props.label}
      </button>
      <ErrorLine error={error} />
    </span>
  );
}

export function CopyButton({ text, label = "Copy" }: { text: string; label?: string }) {
  const [done, setDone] = useState(false);
  return (
    <button
      type="button"
      onClick={() => {
        navigator.clipboard
          ?.writeText(text)
          .then(() => {
            setDone(true);
            setTimeout(() => setDone(false), 1500);
          })
          .catch(() => undefined);
      }}
    >
      {done ? "Copied" : label}
      <span className="visually-hidden" aria-live="polite">{done ? " copied" : ""}</span>
    </button>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <p className="empty">{children}</p>;
}

export function formatBytes(n: number | bigint): string {
  let v = Number(n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) (v /= 1024), i++;
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** Sets the document title, for screen readers and tabs. */
export function useTitle(title: string): void {
  useEffect(() => {
    document.title = `${title} · Flotilla`;
  }, [title]);
}
