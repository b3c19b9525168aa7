import { useEffect, useState } from "react";
import { login, redeemLoginLink } from "../api.ts";
import { ErrorLine, Link, navigate, useTitle } from "../ui.tsx";

/** /login-link#TOKEN from `flotilla login-link`: the token is in the fragment, which no server sees. */
export function LinkLoginPage() {
  useTitle("Logging in");
  const [error, setError] = useState("");
  useEffect(() => {
    const token = location.hash.slice(1);
    // The token leaves the address bar and the history at once, used or not.
    history.replaceState(null, "", "/login-link");
    if (!token) return setError("This link has no login token; run `flotilla login-link` again.");
    redeemLoginLink(token)
      .then(() => navigate("/"))
      .catch((err: unknown) => setError(err instanceof Error ? err.message : String(err)));
  }, []);
  return (
    <main id="main" className="login">
      <h1>Log in to Flotilla</h1>
      {error ? (
        <>
          <ErrorLine error={error} />
          <p>
            <Link to="/">Log in with a password instead</Link>
          </p>
        </>
      ) : (
        <p className="loading">Logging in…</p>
      )}
    </main>
  );
}

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
        No password? Admins who use a key run <code>flotilla login-link</code> and open the link it prints. An admin sets a
        member's password with <code>flotilla member add NAME --role admin --password</code>.
      </p>
    </main>
  );
}
