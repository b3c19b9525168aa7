import { defaultRangeExtractor, useVirtualizer, type Range } from "@tanstack/react-virtual";
import { useCallback, useEffect, useRef, useState, type ReactNode } from "react";
import { admin, can, Code, Connection, ConnectError, Lifecycle, reason, session, type Device, type DeviceStatusChange, type ListDevicesResponse } from "../api.ts";
import { Action, Empty, ErrorLine, Link, navigate, RelTime, useLocation, useTitle } from "../ui.tsx";

export const lifecycleName = (l: Lifecycle): string => (Lifecycle[l] ?? "unknown").toLowerCase();

export function statusOf(d: Device): string {
  if (d.lifecycle !== Lifecycle.APPROVED) return lifecycleName(d.lifecycle);
  return d.connection === Connection.ONLINE ? "online" : "offline";
}

/** The table's columns that sort, and ListDevices' order_by for each. */
type SortKey = "name" | "status" | "last_seen" | "os" | "agent";

/**
 * Devices per page the user may choose: the coordinator filters, searches, sorts and cuts; the
 * page shows one page. 1,000 is the most ListDevices returns at once.
 */
const PAGE_SIZES = [100, 500, 1000];
const DEFAULT_PAGE_SIZE = 100;
/**
 * A row's height in pixels: the CSS gives every row 2.5rem (the root font is 15px) and keeps its
 * cells to one line. Rows are not measured: a row measured half a pixel off made the virtualizer
 * correct the scroll position, which cut a smooth scroll short (End went two thirds of the way).
 */
const ROW_HEIGHT = 37.5;
/** Rows rendered beyond either edge of the visible part, so that scrolling shows no blank. */
const OVERSCAN = 12;
/** How long typing in the search box waits before it asks the coordinator. */
const SEARCH_DELAY_MS = 200;

/** The device table's address: the selector and the page size are kept in the query, like a link. */
function devicesPath(selector: string, pageSize: number): string {
  const q = new URLSearchParams();
  if (selector) q.set("selector", selector);
  if (pageSize !== DEFAULT_PAGE_SIZE) q.set("size", String(pageSize));
  const qs = q.toString();
  return qs ? `/devices?${qs}` : "/devices";
}

export function labelText(labels: Record<string, string>): string {
  return Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}`)
    .join(", ");
}

/** A status change applied to a row of the table. */
function patched(d: Device, c: DeviceStatusChange): Device {
  return {
    ...d,
    name: c.name || d.name,
    lifecycle: c.lifecycle || d.lifecycle,
    connection: c.connection || d.connection,
    lastSeen: c.lastSeen ?? d.lastSeen,
  };
}

/**
 * The organization's device status changes through the WatchDevices stream. `opened` runs when
 * the stream is open (first, and after every reconnect: the caller reads the devices again) and
 * when the coordinator says changes were dropped; `changed` gets the changes. It reconnects by
 * itself, waiting longer after each failure (up to 10 s).
 */
function useDeviceStatus(opened: () => void, changed: (cs: DeviceStatusChange[]) => void): string {
  const [state, setState] = useState("connecting");
  const cb = useRef({ opened, changed });
  cb.current = { opened, changed };
  useEffect(() => {
    const ctl = new AbortController();
    (async () => {
      let delay = 500;
      while (!ctl.signal.aborted && session()) {
        try {
          let first = true;
          for await (const res of admin.watchDevices({}, { signal: ctl.signal })) {
            if (first || res.resync) {
              setState("live");
              first = false;
              delay = 500;
              cb.current.opened();
            }
            if (res.changes.length > 0) cb.current.changed(res.changes);
          }
          if (!ctl.signal.aborted) setState("reconnecting");
        } catch (err) {
          if (ctl.signal.aborted) return;
          if (ConnectError.from(err).code === Code.PermissionDenied) return setState(reason(err));
          setState("reconnecting");
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10_000);
      }
    })().catch(() => undefined);
    return () => ctl.abort();
  }, []);
  return state;
}

export function DevicesPage() {
  useTitle("Devices");
  const loc = useLocation();
  const params = new URLSearchParams(loc.split("?")[1] ?? "");
  const applied = params.get("selector") ?? "";
  const pageSize = PAGE_SIZES.find((n) => String(n) === params.get("size")) ?? DEFAULT_PAGE_SIZE;
  const [selector, setSelector] = useState(applied);
  const [search, setSearch] = useState("");
  const [query, setQuery] = useState("");
  const [sort, setSort] = useState<{ key: SortKey; desc: boolean }>({ key: "name", desc: false });
  // tokens[i] is the page_token of page i (the first is "").
  const [tokens, setTokens] = useState<string[]>([""]);
  const [pageNo, setPageNo] = useState(0);
  const [data, setData] = useState<ListDevicesResponse>();
  const [error, setError] = useState<unknown>();
  const gen = useRef(0);
  // Changes heard while a page is read are applied again on top of what it returns.
  const recent = useRef<{ at: number; change: DeviceStatusChange }[]>([]);
  // The offset and size of the page shown: set with the rows it came with, never ahead of them.
  const [shown, setShown] = useState({ first: 0, size: pageSize });
  const want = useRef({ applied, query, sort, pageSize, token: "", first: 0 });
  want.current = { applied, query, sort, pageSize, token: tokens[pageNo] ?? "", first: pageNo * pageSize };

  const reload = useCallback(() => {
    const mine = ++gen.current;
    const started = performance.now();
    const w = want.current;
    admin
      .listDevices({ selector: w.applied, search: w.query, orderBy: w.sort.key, descending: w.sort.desc, includeTotal: true, pageSize: w.pageSize, pageToken: w.token })
      .then((res) => {
        if (mine !== gen.current) return;
        const late = recent.current.filter((r) => r.at >= started);
        recent.current = late;
        if (late.length > 0) {
          const byId = new Map(late.map((r) => [r.change.id, r.change]));
          res.devices = res.devices.map((d) => (byId.has(d.id) ? patched(d, byId.get(d.id)!) : d));
        }
        setData(res);
        setShown({ first: w.first, size: w.pageSize });
        setError(undefined);
      })
      .catch((e: unknown) => mine === gen.current && setError(e));
  }, []);

  // Typing waits a moment before asking; a new question starts again at the first page.
  useEffect(() => {
    const t = setTimeout(() => setQuery(search), SEARCH_DELAY_MS);
    return () => clearTimeout(t);
  }, [search]);
  useEffect(() => {
    setTokens((old) => (old.length === 1 && old[0] === "" ? old : [""]));
    setPageNo(0);
  }, [applied, query, sort, pageSize]);
  // The first read waits for the status stream to open (it reads then, so that no change falls
  // between the read and the stream), or 2 s if it does not; later questions read at once.
  const streamOpen = useRef(false);
  useEffect(() => {
    if (streamOpen.current) return reload();
    const t = setTimeout(() => !streamOpen.current && reload(), 2000);
    return () => clearTimeout(t);
  }, [applied, query, sort, pageSize, pageNo, tokens]);

  const newDevice = useRef<ReturnType<typeof setTimeout>>(undefined);
  const live = useDeviceStatus(() => ((streamOpen.current = true), reload()), (changes) => {
    const at = performance.now();
    for (const change of changes) recent.current.push({ at, change });
    if (recent.current.length > 5000) recent.current = recent.current.slice(-1000);
    setData((old) => {
      if (!old) return old;
      const byId = new Map(changes.map((c) => [c.id, c]));
      const known = new Set(old.devices.map((d) => d.id));
      // A device the page does not show yet (one that just enrolled): read the page again, once
      // for a burst of enrollments.
      if (changes.some((c) => c.lifecycle && !known.has(c.id)) && !newDevice.current) {
        newDevice.current = setTimeout(() => ((newDevice.current = undefined), reload()), 1000);
      }
      return { ...old, devices: old.devices.map((d) => (byId.has(d.id) ? patched(d, byId.get(d.id)!) : d)) };
    });
  });
  useEffect(() => () => clearTimeout(newDevice.current), []);

  const rows = data?.devices ?? [];
  const total = data?.totalSize ?? 0;
  const first = shown.first;
  const header = (key: SortKey, label: string) => (
    <th scope="col" aria-sort={sort.key === key ? (sort.desc ? "descending" : "ascending") : "none"}>
      <button type="button" className="sort" onClick={() => setSort({ key, desc: sort.key === key ? !sort.desc : false })}>
        {label}
        <span aria-hidden="true">{sort.key === key ? (sort.desc ? " ▼" : " ▲") : ""}</span>
      </button>
    </th>
  );
  const mayWrite = can("devices:write");
  const [selected, setSelected] = useState<ReadonlySet<string>>(new Set());
  const toggle = (id: string) => setSelected((old) => {
    const next = new Set(old);
    if (!next.delete(id)) next.add(id);
    return next;
  });
  const allShown = rows.length > 0 && rows.every((d) => selected.has(d.id));
  const next = data?.nextPageToken ?? "";

  // Only the rows in view, and OVERSCAN more either side, are in the DOM; spacer rows stand for
  // the height of the others. The row that holds the focus stays, with its neighbours, when it
  // scrolls out of view: the focus is not lost, and Tab and Shift+Tab go on to the next row.
  const scroller = useRef<HTMLDivElement>(null);
  const focusedRow = useRef(-1);
  const rangeExtractor = useCallback((range: Range) => {
    const indexes = new Set(defaultRangeExtractor(range));
    const f = focusedRow.current;
    for (const i of [f - 1, f, f + 1]) if (f >= 0 && i >= 0 && i < range.count) indexes.add(i);
    return [...indexes].sort((a, b) => a - b);
  }, []);
  const virtual = useVirtualizer({ count: rows.length, getScrollElement: () => scroller.current, estimateSize: () => ROW_HEIGHT, overscan: OVERSCAN, rangeExtractor });
  // Another page, order or question starts at its first row. (scrollTop, not scrollTo(): in
  // Chromium scrollTo returns a promise, which React would take for a clean-up function.)
  useEffect(() => {
    if (scroller.current) scroller.current.scrollTop = 0;
  }, [applied, query, sort, pageSize, pageNo]);
  const columns = mayWrite ? 8 : 6;
  const body: ReactNode[] = [];
  const spacer = (key: string, height: number) => {
    if (height > 0) {
      body.push(
        <tr key={key} className="spacer" aria-hidden="true">
          <td colSpan={columns} style={{ height }} />
        </tr>,
      );
    }
  };
  let end = 0;
  for (const item of virtual.getVirtualItems()) {
    const d = rows[item.index];
    if (!d) continue;
    spacer(end === 0 ? "top" : `gap-${item.index}`, item.start - end);
    end = item.end;
    const st = statusOf(d);
    const labels = labelText(d.labels);
    const os = d.facts?.osPrettyName || d.facts?.os || "";
    body.push(
      <tr key={d.id} data-device={d.name} data-index={item.index} aria-rowindex={item.index + 2}>
        {mayWrite && (
          <td>
            <input type="checkbox" aria-label={`Select ${d.name}`} checked={selected.has(d.id)} onChange={() => toggle(d.id)} />
          </td>
        )}
        <td className="name" title={d.name}>
          <Link to={`/devices/${encodeURIComponent(d.id)}`}>{d.name}</Link>
        </td>
        <td>
          <span className={`status ${st}`} data-testid="status">
            {st}
          </span>
        </td>
        <td className="clip" title={labels}>
          {labels}
        </td>
        <td className="clip" title={os}>
          {os}
        </td>
        <td className="clip">{d.agentVersion}</td>
        <td className="clip">
          <RelTime at={d.lastSeen} />
        </td>
        {mayWrite && (
          <td>
            {d.lifecycle === Lifecycle.PENDING && (
              <>
                <Action label="Approve" ariaLabel={`Approve ${d.name}`} run={() => admin.approveDevice({ device: d.id }).then(reload)} />
                <Action label="Reject" className="danger" ariaLabel={`Reject ${d.name}`} confirm={`Reject ${d.name}?`} run={() => admin.rejectDevice({ device: d.id }).then(reload)} />
              </>
            )}
          </td>
        )}
      </tr>,
    );
  }
  spacer("bottom", virtual.getTotalSize() - end);

  return (
    <main id="main">
      <h1>Devices</h1>
      <form
        className="filters"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          navigate(devicesPath(selector, pageSize));
        }}
      >
        <label>
          Selector
          <input name="selector" placeholder="env=prod,site!=lab" value={selector} onChange={(e) => setSelector(e.target.value)} />
        </label>
        <button type="submit">Apply</button>
        <label>
          Search
          <input name="search" type="search" placeholder="name, id or label" value={search} onChange={(e) => setSearch(e.target.value)} />
        </label>
        <label>
          Rows per page
          <select name="size" value={pageSize} onChange={(e) => navigate(devicesPath(applied, Number(e.target.value)))}>
            {PAGE_SIZES.map((n) => (
              <option key={n} value={n}>
                {n.toLocaleString("en")}
              </option>
            ))}
          </select>
        </label>
      </form>
      <ErrorLine error={error} />
      <p className="muted">
        <span aria-live="polite" data-testid="device-count">
          {data ? (total === 0 ? "0 devices" : `${first + 1}–${first + rows.length} of ${total} devices`) : "Loading…"}
        </span>{" "}
        · <span data-testid="live-status">{live === "live" ? "live" : live}</span>
      </p>
      {data && total === 0 && (
        <Empty>
          No device {applied || query ? "matches" : "has enrolled yet"}. <Link to="/enrollment">Enroll one</Link>.
        </Empty>
      )}
      {mayWrite && selected.size > 0 && <BulkLabels ids={[...selected]} done={() => (setSelected(new Set()), reload())} />}
      <div className="table-scroll" ref={scroller} tabIndex={0} role="region" aria-label="Device table">
        <table className="devices" aria-rowcount={rows.length + 1}>
          <colgroup>
            {mayWrite && <col className="c-pick" />}
            <col className="c-name" />
            <col className="c-status" />
            <col />
            <col className="c-os" />
            <col className="c-agent" />
            <col className="c-seen" />
            {mayWrite && <col className="c-actions" />}
          </colgroup>
          <thead>
            <tr aria-rowindex={1}>
              {mayWrite && (
                <th scope="col">
                  <input type="checkbox" aria-label="Select every device on this page" checked={allShown} disabled={rows.length === 0} onChange={() => setSelected(allShown ? new Set() : new Set(rows.map((d) => d.id)))} />
                </th>
              )}
              {header("name", "Name")}
              {header("status", "Status")}
              <th scope="col">Labels</th>
              {header("os", "OS")}
              {header("agent", "Agent")}
              {header("last_seen", "Last seen")}
              {mayWrite && <th scope="col">Actions</th>}
            </tr>
          </thead>
          <tbody
            onFocus={(e) => {
              const tr = (e.target as HTMLElement).closest<HTMLElement>("tr[data-index]");
              focusedRow.current = tr ? Number(tr.dataset.index) : -1;
            }}
            onBlur={(e) => {
              if (!e.currentTarget.contains(e.relatedTarget as Node | null)) focusedRow.current = -1;
            }}
          >
            {body}
          </tbody>
        </table>
      </div>
      {(pageNo > 0 || next) && (
        <nav className="pager" aria-label="Pages of devices">
          <button type="button" disabled={pageNo === 0} onClick={() => setPageNo(pageNo - 1)}>
            Previous page
          </button>
          <span className="muted">
            Page {first / shown.size + 1} of {Math.max(1, Math.ceil(total / shown.size))}
          </span>
          <button
            type="button"
            disabled={!next || first !== pageNo * pageSize || shown.size !== pageSize}
            onClick={() => {
              setTokens((old) => [...old.slice(0, pageNo + 1), next]);
              setPageNo(pageNo + 1);
            }}
          >
            Next page
          </button>
        </nav>
      )}
    </main>
  );
}

/** Sets or removes one label on every selected device, a few calls at a time. */
function BulkLabels({ ids, done }: { ids: string[]; done: () => void }) {
  const [key, setKey] = useState("");
  const [value, setValue] = useState("");
  const [progress, setProgress] = useState("");
  const [errors, setErrors] = useState<string[]>([]);
  const run = async (change: (id: string) => Promise<unknown>) => {
    setErrors([]);
    let next = 0;
    let finished = 0;
    const failed: string[] = [];
    const worker = async () => {
      while (next < ids.length) {
        const id = ids[next++]!;
        await change(id).catch((err: unknown) => failed.push(`${id}: ${reason(err)}`));
        setProgress(`${++finished} of ${ids.length}`);
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, ids.length) }, worker));
    setErrors(failed);
    if (failed.length === 0) {
      setProgress("");
      done();
    }
  };
  return (
    <form className="inline bulk" aria-label="Labels of the selected devices" onSubmit={(e) => e.preventDefault()}>
      <strong>{ids.length} selected</strong>
      <label>
        Label key
        <input value={key} onChange={(e) => setKey(e.target.value)} />
      </label>
      <label>
        Value
        <input value={value} onChange={(e) => setValue(e.target.value)} />
      </label>
      <Action label="Set label" disabled={!key.trim()} run={() => run((device) => admin.updateDeviceLabels({ device, set: { [key.trim()]: value.trim() } }))} />
      <Action label="Remove label" className="danger" disabled={!key.trim()} run={() => run((device) => admin.updateDeviceLabels({ device, remove: [key.trim()] }))} />
      <span role="status" className="muted">
        {progress}
      </span>
      {errors.length > 0 && <ErrorLine error={`${errors.length} failed: ${errors.slice(0, 3).join("; ")}`} />}
    </form>
  );
}
