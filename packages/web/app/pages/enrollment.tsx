import qrcode from "qrcode-generator";
import { useState } from "react";
import { admin, can, Lifecycle } from "../api.ts";
import { Action, CopyButton, Empty, ErrorLine, Link, RelTime, useLoad, useTitle } from "../ui.tsx";

/** A QR code as SVG squares (no data: URL, no inline markup). */
export function QrCode({ text, label }: { text: string; label: string }) {
  const qr = qrcode(0, "M");
  qr.addData(text);
  qr.make();
  const n = qr.getModuleCount();
  const cells: string[] = [];
  for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) if (qr.isDark(r, c)) cells.push(`M${c + 4} ${r + 4}h1v1h-1z`);
  return (
    <svg className="qr" viewBox={`0 0 ${n + 8} ${n + 8}`} role="img" aria-label={label} shapeRendering="crispEdges">
      <rect width={n + 8} height={n + 8} fill="#fff" />
      <path d={cells.join("")} fill="#000" />
    </svg>
  );
}

export function EnrollmentPage() {
  useTitle("Enrollment");
  const tokens = useLoad(() => admin.listJoinTokens({}), []);
  const pending = useLoad(() => admin.listDevices({ selector: "" }).then((r) => r.devices.filter((d) => d.lifecycle === Lifecycle.PENDING)), [], 3000);
  const [uses, setUses] = useState("10");
  const [hours, setHours] = useState("168");
  const [labels, setLabels] = useState("");
  const [autoApprove, setAutoApprove] = useState(false);
  const [created, setCreated] = useState<string>();
  const [error, setError] = useState<unknown>();
  const mayCreate = can("tokens:write");
  return (
    <main id="main">
      <h1>Enrollment</h1>
      {mayCreate && (
        <section aria-labelledby="new-h">
          <h2 id="new-h">New join string</h2>
          <form
            className="inline"
            onSubmit={(e) => {
              e.preventDefault();
              setError(undefined);
              const set: Record<string, string> = {};
              for (const part of labels.split(",").map((p) => p.trim()).filter(Boolean)) {
                const eq = part.indexOf("=");
                if (eq <= 0) return setError(`invalid label ${JSON.stringify(part)}: expected key=value`);
                set[part.slice(0, eq)] = part.slice(eq + 1);
              }
              admin
                .createJoinToken({ usesAllowed: Number(uses), expiresInSeconds: BigInt(Math.round(Number(hours) * 3600)), labels: set, autoApprove, coordinatorUrl: "" })
                .then((r) => (setCreated(r.joinString), tokens.reload()))
                .catch((err: unknown) => setError(err));
            }}
          >
            <label>
              Uses
              <input type="number" min={1} required value={uses} onChange={(e) => setUses(e.target.value)} />
            </label>
            <label>
              Valid for (hours)
              <input type="number" min={1} required value={hours} onChange={(e) => setHours(e.target.value)} />
            </label>
            <label>
              Labels
              <input placeholder="env=prod,site=berlin" value={labels} onChange={(e) => setLabels(e.target.value)} />
            </label>
            <label className="check">
              <input type="checkbox" checked={autoApprove} onChange={(e) => setAutoApprove(e.target.checked)} /> approve automatically
            </label>
            <button type="submit">Create join string</button>
          </form>
          <ErrorLine error={error} />
          {created && (
            <div className="joinstring">
              <p>Run on the machine to enroll:</p>
              <pre data-testid="join-command">flotilla agent --state-dir /var/lib/flotilla-agent --join '{created}'</pre>
              <CopyButton text={`flotilla agent --state-dir /var/lib/flotilla-agent --join '${created}'`} label="Copy command" />{" "}
              <CopyButton text={created} label="Copy join string" />
              <QrCode text={created} label="QR code of the join string" />
            </div>
          )}
        </section>
      )}
      <section aria-labelledby="pending-h">
        <h2 id="pending-h">Waiting for approval</h2>
        <ErrorLine error={pending.error} />
        {pending.data?.length === 0 && <Empty>No device waits for approval.</Empty>}
        <ul className="list">
          {pending.data?.map((d) => (
            <li key={d.id}>
              <Link to={`/devices/${encodeURIComponent(d.id)}`}>{d.name}</Link> enrolled <RelTime at={d.createdAt} />{" "}
              {can("devices:write") && (
                <>
                  <Action label="Approve" ariaLabel={`Approve ${d.name}`} run={() => admin.approveDevice({ device: d.id }).then(pending.reload)} />
                  <Action label="Reject" className="danger" ariaLabel={`Reject ${d.name}`} confirm={`Reject ${d.name}?`} run={() => admin.rejectDevice({ device: d.id }).then(pending.reload)} />
                </>
              )}
            </li>
          ))}
        </ul>
      </section>
      <section aria-labelledby="tokens-h">
        <h2 id="tokens-h">Join tokens</h2>
        <ErrorLine error={tokens.error} />
        {tokens.data?.tokens.length === 0 && <Empty>No join token yet.</Empty>}
        {tokens.data && tokens.data.tokens.length > 0 && (
          <table>
            <thead>
              <tr>
                <th scope="col">ID</th>
                <th scope="col">Uses</th>
                <th scope="col">Labels</th>
                <th scope="col">Expires</th>
                <th scope="col">State</th>
                {mayCreate && <th scope="col">Actions</th>}
              </tr>
            </thead>
            <tbody>
              {tokens.data.tokens.map((t) => (
                <tr key={t.id}>
                  <td>
                    <code>{t.id}</code>
                  </td>
                  <td>
                    {t.uses}/{t.usesAllowed}
                  </td>
                  <td>{Object.entries(t.labels).map(([k, v]) => `${k}=${v}`).join(", ")}</td>
                  <td>
                    <RelTime at={t.expiresAt} />
                  </td>
                  <td>{t.revoked ? "revoked" : t.autoApprove ? "auto-approve" : "active"}</td>
                  {mayCreate && <td>{!t.revoked && <Action label="Revoke" className="danger" ariaLabel={`Revoke ${t.id}`} run={() => admin.revokeJoinToken({ id: t.id }).then(tokens.reload)} />}</td>}
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </main>
  );
}
