import { useState } from "react";
import { admin, can, session, type Role } from "../api.ts";
import { Action, CopyButton, Empty, ErrorLine, RelTime, useLoad, useTitle } from "../ui.tsx";

const ROLES: Role[] = ["viewer", "deployer", "admin", "owner"];

export function OrganizationPage() {
  useTitle("Organization");
  const s = session();
  const orgs = useLoad(() => admin.listOrganizations({}), []);
  return (
    <main id="main">
      <h1>Organization {s?.organization}</h1>
      <ErrorLine error={orgs.error} />
      {orgs.data && orgs.data.organizations.length > 1 && (
        <p>
          Your organizations:{" "}
          {orgs.data.organizations.map((o, i) => `${o.name} (${orgs.data!.roles[i] ?? ""})`).join(", ")}. To switch, log out and log in to
          another one.
        </p>
      )}
      {can("members:read") ? <Members /> : <p className="muted">Your role ({s?.role}) does not see members, tokens or the audit log.</p>}
      {can("api-tokens:read") && <ApiTokens />}
      {can("keys:read") && <Keys />}
      {can("audit:read") && <Audit />}
    </main>
  );
}

function Members() {
  const list = useLoad(() => admin.listMembers({}), []);
  const [name, setName] = useState("");
  const [role, setRole] = useState<Role>("viewer");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<unknown>();
  return (
    <section aria-labelledby="members-h">
      <h2 id="members-h">Members</h2>
      <ErrorLine error={list.error} />
      <table>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Role</th>
            <th scope="col">Keys</th>
            <th scope="col">Password</th>
            <th scope="col">Since</th>
            {can("members:write") && <th scope="col">Actions</th>}
          </tr>
        </thead>
        <tbody>
          {list.data?.members.map((m) => (
            <tr key={m.id}>
              <td>{m.name}</td>
              <td>{m.role}</td>
              <td>{m.keys}</td>
              <td>{m.hasPassword ? "yes" : "no"}</td>
              <td>
                <RelTime at={m.createdAt} />
              </td>
              {can("members:write") && (
                <td>
                  <Action label="Remove" className="danger" ariaLabel={`Remove ${m.name}`} confirm={`Remove ${m.name}?`} run={() => admin.removeMember({ member: m.id }).then(list.reload)} />
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
      {can("members:write") && (
        <form
          className="inline"
          onSubmit={(e) => {
            e.preventDefault();
            setError(undefined);
            admin
              .addMember({ name: name.trim(), role, password, publicKey: "" })
              .then(() => (setName(""), setPassword(""), list.reload()))
              .catch((err: unknown) => setError(err));
          }}
        >
          <label>
            New member
            <input required placeholder="alice@acme" value={name} onChange={(e) => setName(e.target.value)} />
          </label>
          <RoleSelect role={role} onChange={setRole} />
          <label>
            Password
            <input type="password" autoComplete="new-password" required value={password} onChange={(e) => setPassword(e.target.value)} />
          </label>
          <button type="submit">Add member</button>
          <ErrorLine error={error} />
        </form>
      )}
    </section>
  );
}

function ApiTokens() {
  const list = useLoad(() => admin.listApiTokens({}), []);
  const [name, setName] = useState("");
  const [role, setRole] = useState<Role>("viewer");
  const [days, setDays] = useState("90");
  const [secret, setSecret] = useState<string>();
  const [error, setError] = useState<unknown>();
  return (
    <section aria-labelledby="tokens-h">
      <h2 id="tokens-h">API tokens</h2>
      <ErrorLine error={list.error} />
      {list.data?.tokens.length === 0 && <Empty>No API token yet.</Empty>}
      {list.data && list.data.tokens.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Role</th>
              <th scope="col">Created by</th>
              <th scope="col">Expires</th>
              <th scope="col">State</th>
              {can("api-tokens:write") && <th scope="col">Actions</th>}
            </tr>
          </thead>
          <tbody>
            {list.data.tokens.map((t) => (
              <tr key={t.id}>
                <td>{t.name}</td>
                <td>{t.role}</td>
                <td>{t.createdBy}</td>
                <td>
                  <RelTime at={t.expiresAt} />
                </td>
                <td>{t.revoked ? "revoked" : "active"}</td>
                {can("api-tokens:write") && <td>{!t.revoked && <Action label="Revoke" className="danger" ariaLabel={`Revoke ${t.name}`} run={() => admin.revokeApiToken({ token: t.id }).then(list.reload)} />}</td>}
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {can("api-tokens:write") && (
        <form
          className="inline"
          onSubmit={(e) => {
            e.preventDefault();
            setError(undefined);
            admin
              .createApiToken({ name: name.trim(), role, expiresInSeconds: BigInt(Math.round(Number(days) * 86400)) })
              .then((r) => (setSecret(r.secret), setName(""), list.reload()))
              .catch((err: unknown) => setError(err));
          }}
        >
          <label>
            Token name
            <input required placeholder="ci" value={name} onChange={(e) => setName(e.target.value)} />
          </label>
          <RoleSelect role={role} onChange={setRole} />
          <label>
            Valid for (days)
            <input type="number" min={1} required value={days} onChange={(e) => setDays(e.target.value)} />
          </label>
          <button type="submit">Create token</button>
          <ErrorLine error={error} />
        </form>
      )}
      {secret && (
        <div className="notice" role="status">
          <p>The token, shown only this once:</p>
          <pre>{secret}</pre>
          <CopyButton text={secret} /> <button type="button" onClick={() => setSecret(undefined)}>Done</button>
        </div>
      )}
    </section>
  );
}

function Keys() {
  const list = useLoad(() => admin.listAdminKeys({}), []);
  return (
    <section aria-labelledby="keys-h">
      <h2 id="keys-h">Admin keys</h2>
      <ErrorLine error={list.error} />
      {list.data?.keys.length === 0 && <Empty>No admin key.</Empty>}
      <ul className="list">
        {list.data?.keys.map((k) => (
          <li key={k.id}>
            <strong>{k.name}</strong> {k.member && <>of {k.member} </>}({k.role}) added <RelTime at={k.createdAt} />{" "}
            {can("keys:write") && <Action label="Revoke" className="danger" ariaLabel={`Revoke key ${k.name}`} confirm={`Revoke key ${k.name}?`} run={() => admin.revokeAdminKey({ key: k.id }).then(list.reload)} />}
          </li>
        ))}
      </ul>
    </section>
  );
}

function Audit() {
  const [actor, setActor] = useState("");
  const [applied, setApplied] = useState("");
  // The latest 200, newest first (the coordinator answers them oldest first).
  const list = useLoad(() => admin.listAuditEntries({ actor: applied, limit: 200 }).then((r) => r.entries.reverse()), [applied]);
  const [verdict, setVerdict] = useState<string>();
  return (
    <section aria-labelledby="audit-h" id="audit">
      <h2 id="audit-h">Audit log</h2>
      <form
        className="inline"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied(actor.trim());
        }}
      >
        <label>
          Actor
          <input placeholder="member:alice" value={actor} onChange={(e) => setActor(e.target.value)} />
        </label>
        <button type="submit">Filter</button>
        <Action
          label="Verify chain"
          run={() =>
            admin.verifyAuditLog({}).then((v) =>
              setVerdict(v.ok ? `The chain of ${v.entries} entries is intact.` : `The chain is broken at entry ${v.firstBadSeq}: ${v.problem}`),
            )
          }
        />
      </form>
      {verdict && (
        <p role="status" className={verdict.startsWith("The chain of") ? "ok" : "bad"} data-testid="audit-verdict">
          {verdict}
        </p>
      )}
      <ErrorLine error={list.error} />
      {list.data?.length === 0 && <Empty>No entry matches.</Empty>}
      {list.data && list.data.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">When</th>
              <th scope="col">Actor</th>
              <th scope="col">Action</th>
              <th scope="col">Target</th>
              <th scope="col">Outcome</th>
            </tr>
          </thead>
          <tbody>
            {list.data.map((e) => (
              <tr key={String(e.seq)}>
                <td>{String(e.seq)}</td>
                <td>
                  <RelTime at={e.time} />
                </td>
                <td>{e.actor}</td>
                <td>{e.action}</td>
                <td>
                  <code>{e.target}</code>
                </td>
                <td className={e.outcome === "ok" ? "" : "bad"}>{e.outcome}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

/** The role picker of the member and API token forms. */
function RoleSelect({ role, onChange }: { role: Role; onChange: (role: Role) => void }) {
  return (
    <label>
      Role
      <select value={role} onChange={(e) => onChange(e.target.value as Role)}>
        {ROLES.map((r) => (
          <option key={r}>{r}</option>
        ))}
      </select>
    </label>
  );
}
