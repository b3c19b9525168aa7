import { useState } from "react";
import { login } from "../api.ts";
import { ErrorLine, useTitle } from "../ui.tsx";

export function LoginPage({ notice }: { notice: string }) {
  useTitle("Log in");
  const [organization, setOrganization] = useState("default");
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  return (
    <main id="main" className="login">
      <h1>Log in to Flotilla</h1>
      {notice && (
        <p className="notice" role="status">
          {notice}
        </p>
      )}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          setBusy(true);
          setError("");
          login(organization.trim(), name.trim(), password)
            .catch((err: unknown) => setError(err instanceof Error ? err.message : String(err)))
            .finally(() => setBusy(false));
        }}
      >
        <label>
          Organization
          <input name="organization" autoComplete="organization" required value={organization} onChange={(e) => setOrganization(e.target.value)} />
        </label>
        <label>
          Name
          <input name="username" autoComplete="username" required value={name} onChange={(e) => setName(e.target.value)} />
        </label>
        <label>
          Password
          <input name="password" type="password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.target.value)} />
        </label>
        <button type="submit" disabled={busy}>
          {busy ? "Logging in…" : "Log in"}
        </button>
        <ErrorLine error={error} />
      </form>
      <p className="muted">
        No password yet? An owner sets one with <code>flotilla member add NAME --role admin --password</code>.
      </p>
    </main>
  );
}
