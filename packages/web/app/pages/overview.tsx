import { admin, can, releases, rollouts, type Rollout } from "../api.ts";
import { Empty, ErrorLine, Link, RelTime, useLoad, useTitle } from "../ui.tsx";

export function rolloutProgress(r: Rollout): { done: number; total: number; failed: number } {
  let done = 0,
    total = 0,
    failed = 0;
  for (const w of r.waves) {
    done += w.healthy + w.failed + w.skipped;
    total += w.total;
    failed += w.failed;
  }
  return { done, total, failed };
}

export function Progress({ r }: { r: Rollout }) {
  const p = rolloutProgress(r);
  return (
    <span className="progress">
      <progress max={Math.max(p.total, 1)} value={p.done} aria-label={`rollout ${r.id} progress`} /> {p.done}/{p.total}
      {p.failed > 0 && <span className="bad"> · {p.failed} failed</span>}
    </span>
  );
}

export function OverviewPage() {
  useTitle("Overview");
  // Counted by the coordinator: the page never holds the fleet's devices, whatever its size.
  const fleet = useLoad(async () => {
    const [summary, r] = await Promise.all([admin.summarizeDevices({}), rollouts.listRollouts({})]);
    return { summary, rollouts: r.rollouts };
  }, [], 5000);
  const rel = useLoad(() => releases.listReleases({ name: "" }), []);
  const audit = useLoad(async () => (can("audit:read") ? (await admin.listAuditEntries({ limit: 10 })).entries.reverse() : undefined), []);
  const counts = fleet.data?.summary;
  const active = fleet.data?.rollouts.filter((r) => r.status === "running" || r.status === "paused") ?? [];
  const running = new Map<string, number>();
  for (const r of fleet.data?.rollouts ?? []) if (r.status === "completed" && r.spec) running.set(`${r.spec.releaseName}@${r.spec.releaseVersion}`, (running.get(`${r.spec.releaseName}@${r.spec.releaseVersion}`) ?? 0) + rolloutProgress(r).done);
  return (
    <main id="main">
      <h1>Overview</h1>
      <ErrorLine error={fleet.error} />
      <section aria-labelledby="fleet-h">
        <h2 id="fleet-h">Fleet</h2>
        {counts ? (
          <ul className="cards">
            <li className="card ok">
              <Link to="/devices?selector=">
                <strong data-testid="count-online">{counts.online}</strong> online
              </Link>
            </li>
            <li className="card">
              <strong data-testid="count-offline">{counts.offline}</strong> offline
            </li>
            <li className="card warn">
              <Link to="/enrollment">
                <strong data-testid="count-pending">{counts.pending}</strong> pending approval
              </Link>
            </li>
            <li className="card bad">
              <strong data-testid="count-failing">{counts.failing}</strong> failing
            </li>
          </ul>
        ) : (
          <p className="loading">Loading…</p>
        )}
      </section>
      <section aria-labelledby="active-h">
        <h2 id="active-h">Active rollouts</h2>
        {active.length === 0 ? (
          <Empty>No rollout is running. Start one from <Link to="/rollouts">Releases &amp; rollouts</Link>.</Empty>
        ) : (
          <ul className="list">
            {active.map((r) => (
              <li key={r.id}>
                <Link to={`/rollouts/${r.id}`}>
                  {r.spec?.releaseName}@{r.spec?.releaseVersion}
                </Link>{" "}
                <span className={`status ${r.status}`}>{r.status}</span> wave {r.currentWave}/{r.waves.length} <Progress r={r} />
              </li>
            ))}
          </ul>
        )}
      </section>
      <section aria-labelledby="rel-h">
        <h2 id="rel-h">Releases</h2>
        <ErrorLine error={rel.error} />
        {rel.data && rel.data.releases.length === 0 && <Empty>No release is published yet (<code>flotilla release publish</code>).</Empty>}
        {rel.data && rel.data.releases.length > 0 && (
          <ul className="list">
            {rel.data.releases.slice(-8).reverse().map((r) => (
              <li key={`${r.name}@${r.version}`}>
                <code>
                  {r.name}@{r.version}
                </code>{" "}
                <span className="muted">{r.kind}</span> · published <RelTime at={r.createdAt} />
                {running.get(`${r.name}@${r.version}`) ? ` · delivered to ${running.get(`${r.name}@${r.version}`)} devices by rollouts` : ""}
              </li>
            ))}
          </ul>
        )}
      </section>
      {can("audit:read") && (
        <section aria-labelledby="audit-h">
          <h2 id="audit-h">Recent activity</h2>
          {/* The coordinator answers the latest entries oldest first; the newest go on top here. */}
          <ErrorLine error={audit.error} />
          {audit.data?.length === 0 && <Empty>Nothing happened yet.</Empty>}
          <ul className="list">
            {audit.data?.map((e) => (
              <li key={String(e.seq)}>
                <RelTime at={e.time} /> <strong>{e.actor}</strong> {e.action} <code>{e.target}</code> <span className={e.outcome === "ok" ? "muted" : "bad"}>{e.outcome}</span>
              </li>
            ))}
          </ul>
          <Link to="/organization#audit">Full audit log</Link>
        </section>
      )}
    </main>
  );
}
