import { useVirtualizer } from "@tanstack/react-virtual";
import { useMemo, useRef, useState } from "react";
import { admin, can, Connection, Lifecycle, reason, type Device } from "../api.ts";
import { Action, Empty, ErrorLine, Link, navigate, RelTime, toDate, useLoad, useLocation, useTitle } from "../ui.tsx";

export const lifecycleName = (l: Lifecycle): string => (Lifecycle[l] ?? "unknown").toLowerCase();

export function statusOf(d: Device): string {
  if (d.lifecycle !== Lifecycle.APPROVED) return lifecycleName(d.lifecycle);
  return d.connection === Connection.ONLINE ? "online" : "offline";
}

type SortKey = "name" | "status" | "lastSeen" | "os" | "agent";
const sorters: Record<SortKey, (a: Device, b: Device) => number> = {
  name: (a, b) => a.name.localeCompare(b.name),
  status: (a, b) => statusOf(a).localeCompare(statusOf(b)),
  lastSeen: (a, b) => (toDate(a.lastSeen)?.getTime() ?? 0) - (toDate(b.lastSeen)?.getTime() ?? 0),
  os: (a, b) => (a.facts?.osPrettyName ?? "").localeCompare(b.facts?.osPrettyName ?? ""),
  agent: (a, b) => a.agentVersion.localeCompare(b.agentVersion),
};

const ROW_HEIGHT = 41;
/** How often the table asks again: there is no device-status stream yet, so it polls. */
const REFRESH_MS = 3000;

export function labelText(labels: Record<string, string>): string {
  return Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}`)
    .join(", ");
}

export function DevicesPage() {
  useTitle("Devices");
  const loc = useLocation();
  const applied = new URLSearchParams(loc.split("?")[1] ?? "").get("selector") ?? "";
  const [selector, setSelector] = useState(applied);
  const [search, setSearch] = useState("");
  const [sort, setSort] = useState<{ key: SortKey; desc: boolean }>({ key: "name", desc: false });
  // The selector is evaluated by the coordinator; search and sorting work on what it returned.
  const list = useLoad(() => admin.listDevices({ selector: applied }), [applied], REFRESH_MS);
  const rows = useMemo(() => {
    const q = search.trim().toLowerCase();
    const all = list.data?.devices ?? [];
    const hit = q ? all.filter((d) => d.name.toLowerCase().includes(q) || d.id.toLowerCase().includes(q) || labelText(d.labels).toLowerCase().includes(q)) : all;
    const sorted = [...hit].sort(sorters[sort.key]);
    return sort.desc ? sorted.reverse() : sorted;
  }, [list.data, search, sort]);
  const scroller = useRef<HTMLDivElement>(null);
  const virtual = useVirtualizer({ count: rows.length, getScrollElement: () => scroller.current, estimateSize: () => ROW_HEIGHT, overscan: 10 });
  const items = virtual.getVirtualItems();
  const top = items[0]?.start ?? 0;
  const bottom = virtual.getTotalSize() - (items.at(-1)?.end ?? 0);
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
  return (
    <main id="main">
      <h1>Devices</h1>
      <form
        className="filters"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          navigate(selector ? `/devices?selector=${encodeURIComponent(selector)}` : "/devices");
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
      </form>
      <ErrorLine error={list.error} />
      <p className="muted" aria-live="polite" data-testid="device-count">
        {list.data ? `${rows.length} of ${list.data.devices.length} devices` : "Loading…"}
      </p>
      {list.data && list.data.devices.length === 0 && (
        <Empty>
          No device {applied ? "matches this selector" : "has enrolled yet"}. <Link to="/enrollment">Enroll one</Link>.
        </Empty>
      )}
      {mayWrite && selected.size > 0 && <BulkLabels ids={[...selected]} done={() => (setSelected(new Set()), list.reload())} />}
      <div className="table-scroll" ref={scroller} tabIndex={0} role="region" aria-label="Device table">
        <table className="devices">
          <thead>
            <tr>
              {mayWrite && (
                <th scope="col">
                  <input type="checkbox" aria-label="Select every device shown" checked={allShown} onChange={() => setSelected(allShown ? new Set() : new Set(rows.map((d) => d.id)))} />
                </th>
              )}
              {header("name", "Name")}
              {header("status", "Status")}
              <th scope="col">Labels</th>
              {header("os", "OS")}
              {header("agent", "Agent")}
              {header("lastSeen", "Last seen")}
              {mayWrite && <th scope="col">Actions</th>}
            </tr>
          </thead>
          <tbody>
            {top > 0 && (
              <tr aria-hidden="true">
                <td style={{ height: top, padding: 0 }} colSpan={8} />
              </tr>
            )}
            {items.map((it) => {
              const d = rows[it.index]!;
              const st = statusOf(d);
              return (
                <tr key={d.id} data-device={d.name} style={{ height: ROW_HEIGHT }}>
                  {mayWrite && (
                    <td>
                      <input type="checkbox" aria-label={`Select ${d.name}`} checked={selected.has(d.id)} onChange={() => toggle(d.id)} />
                    </td>
                  )}
                  <td>
                    <Link to={`/devices/${encodeURIComponent(d.id)}`}>{d.name}</Link>
                  </td>
                  <td>
                    <span className={`status ${st}`} data-testid="status">
                      {st}
                    </span>
                  </td>
                  <td className="labels">{labelText(d.labels)}</td>
                  <td>{d.facts?.osPrettyName || d.facts?.os || ""}</td>
                  <td>{d.agentVersion}</td>
                  <td>
                    <RelTime at={d.lastSeen} />
                  </td>
                  {mayWrite && (
                    <td>
                      {d.lifecycle === Lifecycle.PENDING && (
                        <>
                          <Action label="Approve" ariaLabel={`Approve ${d.name}`} run={() => admin.approveDevice({ device: d.id }).then(list.reload)} />
                          <Action label="Reject" className="danger" ariaLabel={`Reject ${d.name}`} confirm={`Reject ${d.name}?`} run={() => admin.rejectDevice({ device: d.id }).then(list.reload)} />
                        </>
                      )}
                    </td>
                  )}
                </tr>
              );
            })}
            {bottom > 0 && (
              <tr aria-hidden="true">
                <td style={{ height: bottom, padding: 0 }} colSpan={8} />
              </tr>
            )}
          </tbody>
        </table>
      </div>
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
