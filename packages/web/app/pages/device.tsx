import { useEffect, useRef, useState } from "react";
import { admin, can, Code, ConnectError, Lifecycle, reason, releases, session, telemetry, type LogLine } from "../api.ts";
import { MetricsCharts } from "../charts.tsx";
import { Action, CopyButton, Empty, ErrorLine, formatBytes, RelTime, useLoad, useTitle } from "../ui.tsx";
import { labelText, statusOf } from "./devices.tsx";

export function DevicePage({ id }: { id: string }) {
  const dev = useLoad(() => admin.getDevice({ device: id }), [id], 5000);
  const d = dev.data?.device;
  useTitle(d ? d.name : "Device");
  if (!d) {
    return (
      <main id="main">
        <h1>Device</h1>
        <ErrorLine error={dev.error} />
        {!dev.error && <p className="loading">Loading…</p>}
      </main>
    );
  }
  const f = d.facts;
  const st = statusOf(d);
  const ssh = `flotilla ssh root@${d.name}`;
  return (
    <main id="main">
      <h1>
        {d.name} <span className={`status ${st}`}>{st}</span>
      </h1>
      <ErrorLine error={dev.error} />
      {d.lifecycle === Lifecycle.PENDING && can("devices:write") && (
        <p>
          This device waits for approval. <Action label="Approve" run={() => admin.approveDevice({ device: d.id }).then(dev.reload)} />{" "}
          <Action label="Reject" className="danger" confirm={`Reject ${d.name}?`} run={() => admin.rejectDevice({ device: d.id }).then(dev.reload)} />
        </p>
      )}
      <div className="grid2">
        <section aria-labelledby="facts-h">
          <h2 id="facts-h">Facts</h2>
          <dl className="facts">
            <dt>ID</dt>
            <dd>
              <code>{d.id}</code>
            </dd>
            <dt>Last seen</dt>
            <dd>
              <RelTime at={d.lastSeen} />
            </dd>
            <dt>Enrolled</dt>
            <dd>
              <RelTime at={d.createdAt} />
            </dd>
            <dt>OS</dt>
            <dd>{f?.osPrettyName || `${f?.os ?? ""} ${f?.osVersion ?? ""}`}</dd>
            <dt>Kernel</dt>
            <dd>{f?.kernel}</dd>
            <dt>CPU</dt>
            <dd>
              {f?.cpuModel} ({f?.cpuCount} × {f?.arch})
            </dd>
            <dt>Memory</dt>
            <dd>{f ? formatBytes(f.memoryBytes) : ""}</dd>
            <dt>Disks</dt>
            <dd>{f?.disks.map((x) => `${x.mount} ${formatBytes(x.freeBytes)} free of ${formatBytes(x.totalBytes)}`).join("; ")}</dd>
            <dt>Addresses</dt>
            <dd>{f?.interfaces.flatMap((i) => i.addresses).join(", ")}</dd>
            <dt>Agent</dt>
            <dd>{d.agentVersion}</dd>
          </dl>
          <h3>Shell</h3>
          <p>
            <code>{ssh}</code> <CopyButton text={ssh} label="Copy ssh command" />
          </p>
        </section>
        <Labels id={d.id} labels={d.labels} onChange={dev.reload} />
      </div>
      <DeviceReleases id={d.id} />
      <LogTail id={d.id} />
      <section aria-labelledby="metrics-h">
        <h2 id="metrics-h">Metrics</h2>
        <MetricsCharts device={d.id} />
      </section>
    </main>
  );
}

function Labels({ id, labels, onChange }: { id: string; labels: Record<string, string>; onChange: () => void }) {
  const [key, setKey] = useState("");
  const [value, setValue] = useState("");
  const [error, setError] = useState<unknown>();
  const entries = Object.entries(labels).sort(([a], [b]) => a.localeCompare(b));
  const mayWrite = can("devices:write");
  return (
    <section aria-labelledby="labels-h">
      <h2 id="labels-h">Labels</h2>
      {entries.length === 0 ? (
        <Empty>No labels.</Empty>
      ) : (
        <ul className="chips" aria-label={labelText(labels)}>
          {entries.map(([k, v]) => (
            <li key={k}>
              <code>
                {k}={v}
              </code>
              {mayWrite && <Action label="×" ariaLabel={`Remove label ${k}`} run={() => admin.updateDeviceLabels({ device: id, remove: [k] }).then(onChange)} />}
            </li>
          ))}
        </ul>
      )}
      {mayWrite && (
        <form
          className="inline"
          onSubmit={(e) => {
            e.preventDefault();
            setError(undefined);
            admin
              .updateDeviceLabels({ device: id, set: { [key.trim()]: value.trim() } })
              .then(() => (setKey(""), setValue(""), onChange()))
              .catch((err: unknown) => setError(err));
          }}
        >
          <label>
            Key
            <input required value={key} onChange={(e) => setKey(e.target.value)} />
          </label>
          <label>
            Value
            <input value={value} onChange={(e) => setValue(e.target.value)} />
          </label>
          <button type="submit">Set label</button>
          <ErrorLine error={error} />
        </form>
      )}
    </section>
  );
}

function DeviceReleases({ id }: { id: string }) {
  const rel = useLoad(() => releases.getDeviceReleases({ device: id, limit: 50 }), [id], 5000);
  const all = useLoad(() => releases.listReleases({ name: "" }), []);
  const [pick, setPick] = useState("");
  return (
    <section aria-labelledby="rel-h">
      <h2 id="rel-h">Releases</h2>
      <ErrorLine error={rel.error} />
      {rel.data?.releases.length === 0 && <Empty>No release is assigned to this device.</Empty>}
      {rel.data && rel.data.releases.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Current</th>
              <th scope="col">Desired</th>
              <th scope="col">State</th>
              <th scope="col">Reported</th>
            </tr>
          </thead>
          <tbody>
            {rel.data.releases.map((r) => (
              <tr key={r.name}>
                <td>{r.name}</td>
                <td>{r.currentVersion || "—"}</td>
                <td>{r.desiredVersion || "—"}</td>
                <td>
                  {r.reportedState}
                  {r.reportedError && <span className="bad"> ({r.reportedError})</span>}
                </td>
                <td>
                  <RelTime at={r.reportedAt} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {can("releases:write") && all.data && all.data.releases.length > 0 && (
        <form
          className="inline"
          onSubmit={(e) => {
            e.preventDefault();
          }}
        >
          <label>
            Deploy release
            <select value={pick} onChange={(e) => setPick(e.target.value)}>
              <option value="">choose…</option>
              {all.data.releases.map((r) => (
                <option key={`${r.name}@${r.version}`} value={`${r.name}@${r.version}`}>
                  {r.name}@{r.version}
                </option>
              ))}
            </select>
          </label>
          <Action
            label="Deploy"
            disabled={!pick}
            run={() => {
              const at = pick.lastIndexOf("@");
              return releases.deployRelease({ device: id, name: pick.slice(0, at), version: pick.slice(at + 1) }).then(rel.reload);
            }}
          />
        </form>
      )}
      <h3>Deployment steps</h3>
      {rel.data?.steps.length === 0 && <Empty>No deployment has run on this device.</Empty>}
      <ol className="timeline">
        {rel.data?.steps.map((s, i) => (
          <li key={i} className={s.error ? "bad" : ""}>
            <RelTime at={s.time} /> <strong>{s.name}</strong> {s.step}
            {s.bytesTotal > 0n && ` ${formatBytes(s.bytesDone)} / ${formatBytes(s.bytesTotal)}`}
            {s.error && <span className="bad"> — {s.error}</span>}
          </li>
        ))}
      </ol>
    </section>
  );
}

const MAX_LINES = 500;

/** The device's log through the FollowLogs stream; it reconnects when the stream ends or fails. */
function LogTail({ id }: { id: string }) {
  const [unit, setUnit] = useState("");
  const [grep, setGrep] = useState("");
  const [filter, setFilter] = useState({ unit: "", grep: "" });
  const [lines, setLines] = useState<LogLine[]>([]);
  const [state, setState] = useState("connecting");
  const box = useRef<HTMLOListElement>(null);
  useEffect(() => {
    const ctl = new AbortController();
    setLines([]);
    (async () => {
      let delay = 500;
      while (!ctl.signal.aborted && session()) {
        try {
          setState("connecting");
          let first = true;
          for await (const res of telemetry.followLogs({ filter: { device: id, unit: filter.unit, grep: filter.grep }, tail: 100 }, { signal: ctl.signal })) {
            if (first) setState("live");
            first = false;
            delay = 500;
            setLines((old) => [...old, ...res.lines].slice(-MAX_LINES));
          }
        } catch (err) {
          if (ctl.signal.aborted) return;
          const code = ConnectError.from(err).code;
          if (code === Code.PermissionDenied || code === Code.InvalidArgument || code === Code.NotFound) return setState(reason(err));
          setState(`reconnecting (${reason(err)})`);
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10_000);
        // A new stream sends the tail again: start from an empty view.
        setLines([]);
      }
    })().catch(() => undefined);
    return () => ctl.abort();
  }, [id, filter]);
  useEffect(() => {
    const el = box.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [lines]);
  return (
    <section aria-labelledby="logs-h">
      <h2 id="logs-h">Logs</h2>
      <form
        className="inline"
        onSubmit={(e) => {
          e.preventDefault();
          setFilter({ unit: unit.trim(), grep: grep.trim() });
        }}
      >
        <label>
          Unit
          <input name="unit" value={unit} onChange={(e) => setUnit(e.target.value)} placeholder="nginx.service" />
        </label>
        <label>
          Text
          <input name="grep" value={grep} onChange={(e) => setGrep(e.target.value)} placeholder="error" />
        </label>
        <button type="submit">Filter</button>
        <span className="muted" role="status">
          {state}
        </span>
      </form>
      <ol className="logs" ref={box} tabIndex={0} aria-label="Log lines" data-testid="log-tail">
        {lines.length === 0 && <li className="muted">No log lines yet.</li>}
        {lines.map((l) => (
          <li key={`${l.unit}/${l.seq}/${l.timeUnixMs}`}>
            <time dateTime={new Date(Number(l.timeUnixMs)).toISOString()} title={new Date(Number(l.timeUnixMs)).toLocaleString()}>
              {new Date(Number(l.timeUnixMs)).toLocaleTimeString()}
            </time>{" "}
            <span className="unit">{l.unit}</span> {l.line}
          </li>
        ))}
      </ol>
    </section>
  );
}
