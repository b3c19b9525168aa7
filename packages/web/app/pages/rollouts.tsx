import { useEffect, useState } from "react";
import { can, Code, ConnectError, reason, releases, rollouts, session, type Plan, type Rollout, type RolloutDevice, type RolloutSpec } from "../api.ts";
import { Action, CopyButton, Empty, ErrorLine, Link, navigate, RelTime, useLoad, useTitle } from "../ui.tsx";
import { Progress } from "./overview.tsx";

export function RolloutsPage() {
  useTitle("Releases & rollouts");
  const list = useLoad(() => rollouts.listRollouts({}), [], 5000);
  const rel = useLoad(() => releases.listReleases({ name: "" }), []);
  return (
    <main id="main">
      <h1>Releases &amp; rollouts</h1>
      <NewRollout releaseNames={rel.data?.releases.map((r) => `${r.name}@${r.version}`) ?? []} />
      <section aria-labelledby="ro-h">
        <h2 id="ro-h">Rollouts</h2>
        <ErrorLine error={list.error} />
        {list.data?.rollouts.length === 0 && <Empty>No rollout yet.</Empty>}
        {list.data && list.data.rollouts.length > 0 && (
          <table>
            <thead>
              <tr>
                <th scope="col">Release</th>
                <th scope="col">Status</th>
                <th scope="col">Wave</th>
                <th scope="col">Progress</th>
                <th scope="col">Started</th>
                <th scope="col">By</th>
              </tr>
            </thead>
            <tbody>
              {list.data.rollouts.map((r) => (
                <tr key={r.id}>
                  <td>
                    <Link to={`/rollouts/${r.id}`}>
                      {r.spec?.releaseName}@{r.spec?.releaseVersion}
                    </Link>
                  </td>
                  <td>
                    <span className={`status ${r.status}`}>{r.status}</span>
                  </td>
                  <td>
                    {r.currentWave}/{r.waves.length}
                  </td>
                  <td>
                    <Progress r={r} />
                  </td>
                  <td>
                    <RelTime at={r.createdAt} />
                  </td>
                  <td>{r.createdBy}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      <section aria-labelledby="rel-h">
        <h2 id="rel-h">Releases</h2>
        <ErrorLine error={rel.error} />
        {rel.data?.releases.length === 0 && (
          <Empty>
            No release is published yet. Publish one with <code>flotilla release publish</code>.
          </Empty>
        )}
        <ul className="list">
          {rel.data?.releases.map((r) => (
            <li key={`${r.name}@${r.version}`}>
              <code>
                {r.name}@{r.version}
              </code>{" "}
              <span className="muted">
                {r.kind} · counter {String(r.counter)}
              </span>{" "}
              · <RelTime at={r.createdAt} />
            </li>
          ))}
        </ul>
      </section>
    </main>
  );
}

function NewRollout({ releaseNames }: { releaseNames: string[] }) {
  const [release, setRelease] = useState("");
  const [selector, setSelector] = useState("");
  const [waves, setWaves] = useState("1,10%,100%");
  const [approveEach, setApproveEach] = useState(false);
  const [plan, setPlan] = useState<Plan>();
  const [error, setError] = useState<unknown>();
  const chosen = release || releaseNames.at(-1) || "";
  const spec = (): RolloutSpec => {
    const at = chosen.lastIndexOf("@");
    return {
      $typeName: "flotilla.admin.v1.RolloutSpec",
      releaseName: chosen.slice(0, at),
      releaseVersion: chosen.slice(at + 1),
      selector: selector.trim(),
      waves: waves.split(",").map((w) => w.trim()).filter(Boolean),
      maxParallel: 0,
      failureThreshold: "",
      soakMs: 0n,
      approveEachWave: approveEach,
      deadlineMs: 0n,
    };
  };
  if (releaseNames.length === 0) return null;
  return (
    <section aria-labelledby="new-h">
      <h2 id="new-h">{can("rollouts:write") ? "New rollout" : "Plan a rollout"}</h2>
      <form
        className="inline"
        onSubmit={(e) => {
          e.preventDefault();
          setError(undefined);
          rollouts
            .planRollout({ spec: spec() })
            .then((r) => setPlan(r.plan))
            .catch((err: unknown) => (setPlan(undefined), setError(err)));
        }}
      >
        <label>
          Release
          <select name="release" value={chosen} onChange={(e) => (setRelease(e.target.value), setPlan(undefined))}>
            {releaseNames.map((n) => (
              <option key={n}>{n}</option>
            ))}
          </select>
        </label>
        <label>
          Selector
          <input name="selector" required placeholder="env=prod" value={selector} onChange={(e) => (setSelector(e.target.value), setPlan(undefined))} />
        </label>
        <label>
          Waves
          <input name="waves" value={waves} onChange={(e) => (setWaves(e.target.value), setPlan(undefined))} />
        </label>
        <label className="check">
          <input type="checkbox" checked={approveEach} onChange={(e) => setApproveEach(e.target.checked)} /> approve each wave
        </label>
        <button type="submit">Preview plan</button>
      </form>
      <ErrorLine error={error} />
      {plan && <PlanView plan={plan} />}
      {plan && can("rollouts:write") && (
        <Action
          label="Start rollout"
          className="primary"
          run={() => rollouts.startRollout({ spec: spec() }).then((r) => r.rollout && navigate(`/rollouts/${r.rollout.id}`))}
        />
      )}
    </section>
  );
}

function PlanView({ plan }: { plan: Plan }) {
  return (
    <div className="plan" aria-label="Rollout plan">
      <h3>
        Plan for {plan.releaseName}@{plan.releaseVersion} on <code>{plan.selector}</code>
      </h3>
      {plan.waves.length === 0 && <Empty>No eligible device matches this selector.</Empty>}
      <ol>
        {plan.waves.map((w) => (
          <li key={w.number}>
            Wave {w.number} ({w.entry}): {w.devices.length} devices —{" "}
            {w.devices
              .slice(0, 50)
              .map((d) => d.name + (d.online ? "" : " (offline)"))
              .join(", ")}
            {w.devices.length > 50 && ` and ${w.devices.length - 50} more`}
          </li>
        ))}
      </ol>
      {plan.ineligible.length > 0 && (
        <>
          <h4>Not eligible</h4>
          <ul>
            {plan.ineligible.map((d) => (
              <li key={d.id}>
                {d.name}: {d.reason}
              </li>
            ))}
          </ul>
        </>
      )}
      {plan.offline.length > 0 && <p className="muted">Offline now (they get the release when they return): {plan.offline.map((d) => d.name).join(", ")}</p>}
    </div>
  );
}

/**
 * One rollout, live through WatchRollout; the stream is opened again after it ends or fails. Each
 * snapshot carries the first page of devices; "Load more devices" appends later pages from
 * GetRollout (as they are when loaded, not live).
 */
export function RolloutPage({ id }: { id: string }) {
  const [r, setR] = useState<Rollout>();
  const [next, setNext] = useState("");
  const [later, setLater] = useState<{ devices: RolloutDevice[]; next: string }>();
  const [state, setState] = useState("connecting");
  useTitle(r ? `Rollout ${r.spec?.releaseName}@${r.spec?.releaseVersion}` : "Rollout");
  useEffect(() => {
    const ctl = new AbortController();
    (async () => {
      let delay = 500;
      while (!ctl.signal.aborted && session()) {
        try {
          for await (const res of rollouts.watchRollout({ id }, { signal: ctl.signal })) {
            setState("live");
            delay = 500;
            if (res.rollout) setR(res.rollout);
            setNext(res.nextPageToken);
          }
          // A finished rollout ends its stream: nothing more will change.
          setState("finished");
          return;
        } catch (err) {
          if (ctl.signal.aborted) return;
          const code = ConnectError.from(err).code;
          if (code === Code.NotFound || code === Code.PermissionDenied) return setState(reason(err));
          setState(`reconnecting (${reason(err)})`);
        }
        await new Promise((res) => setTimeout(res, delay));
        delay = Math.min(delay * 2, 10_000);
      }
    })().catch(() => undefined);
    return () => ctl.abort();
  }, [id]);
  const active = r && (r.status === "running" || r.status === "paused");
  const mayWrite = can("rollouts:write");
  const devices = r ? [...r.devices, ...(later?.devices ?? [])] : [];
  const total = r ? r.waves.reduce((n, w) => n + w.total, 0) : 0;
  const token = later ? later.next : next;
  return (
    <main id="main">
      <h1>
        Rollout {r ? `${r.spec?.releaseName}@${r.spec?.releaseVersion}` : id}{" "}
        {r && (
          <span className={`status ${r.status}`} data-testid="rollout-status">
            {r.status}
          </span>
        )}
      </h1>
      <p className="muted" role="status">
        {state}
      </p>
      {r && (
        <>
          <p>
            Selector <code>{r.spec?.selector}</code> · wave {r.currentWave}/{r.waves.length} {r.waiting && "· waiting for approval"} · started <RelTime at={r.createdAt} /> by {r.createdBy}
            {r.reason && <> · {r.reason}</>}
          </p>
          <Progress r={r} />
          {active && mayWrite && (
            <p className="buttons">
              {r.status === "running" && <Action label="Pause" run={() => rollouts.pauseRollout({ id })} />}
              {r.status === "paused" && <Action label="Resume" run={() => rollouts.resumeRollout({ id })} />}
              {r.waiting && <Action label="Approve next wave" className="primary" run={() => rollouts.approveWave({ id })} />}
              <Action label="Abort" className="danger" confirm="Abort this rollout? Devices keep what they have." run={() => rollouts.abortRollout({ id })} />
              <Action label="Abort and roll back" className="danger" confirm="Abort and return devices to their previous release?" run={() => rollouts.abortRollout({ id, rollBack: true })} />
            </p>
          )}
          {active && mayWrite && (
            <p className="muted">
              A roll back to releases that must be signed again needs the signing key: <code>flotilla rollout abort {id} --roll-back</code>{" "}
              <CopyButton text={`flotilla rollout abort ${id} --roll-back`} />
            </p>
          )}
          <h2>Waves</h2>
          <table>
            <thead>
              <tr>
                <th scope="col">Wave</th>
                <th scope="col">Target</th>
                <th scope="col">Healthy</th>
                <th scope="col">Failed</th>
                <th scope="col">In progress</th>
                <th scope="col">Pending</th>
                <th scope="col">Skipped</th>
              </tr>
            </thead>
            <tbody>
              {r.waves.map((w) => (
                <tr key={w.number} aria-current={w.number === r.currentWave ? "step" : undefined}>
                  <td>{w.number}</td>
                  <td>{w.entry}</td>
                  <td>
                    {w.healthy}/{w.total}
                  </td>
                  <td className={w.failed ? "bad" : ""}>{w.failed}</td>
                  <td>{w.inProgress}</td>
                  <td>{w.pending}</td>
                  <td>{w.skipped}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <h2>Devices</h2>
          <table data-testid="rollout-devices">
            <thead>
              <tr>
                <th scope="col">Device</th>
                <th scope="col">Wave</th>
                <th scope="col">State</th>
                <th scope="col">Updated</th>
              </tr>
            </thead>
            <tbody>
              {devices.map((d) => (
                <tr key={d.deviceId}>
                  <td>
                    <Link to={`/devices/${encodeURIComponent(d.deviceId)}`}>{d.name}</Link>
                  </td>
                  <td>{d.wave}</td>
                  <td>
                    <span className={`status ${d.state}`}>{d.state}</span>
                    {d.error && <span className="bad"> — {d.error}</span>}
                  </td>
                  <td>
                    <RelTime at={d.updatedAt} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {devices.length < total && (
            <p className="muted">
              Showing {devices.length} of {total} devices.{" "}
              {token && (
                <Action
                  label="Load more devices"
                  run={() => rollouts.getRollout({ id, pageToken: token }).then((p) => setLater({ devices: [...(later?.devices ?? []), ...(p.rollout?.devices ?? [])], next: p.nextPageToken }))}
                />
              )}
            </p>
          )}
        </>
      )}
    </main>
  );
}
