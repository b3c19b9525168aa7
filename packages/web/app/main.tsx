/** The console's shell: the login gate, the navigation, and one page per route. */
import { StrictMode, useEffect, useState, useSyncExternalStore } from "react";
import { createRoot } from "react-dom/client";
import { admin, expireSession, logout, onSessionChange, reason, session, sessionEndReason, switchOrganization, type Session } from "./api.ts";
import { DevicePage } from "./pages/device.tsx";
import { DevicesPage } from "./pages/devices.tsx";
import { EnrollmentPage } from "./pages/enrollment.tsx";
import { LinkLoginPage, LoginPage } from "./pages/login.tsx";
import { OrganizationPage } from "./pages/organization.tsx";
import { OverviewPage } from "./pages/overview.tsx";
import { RolloutPage, RolloutsPage } from "./pages/rollouts.tsx";
import { Link, navigate, useLoad, useLocation } from "./ui.tsx";

function useSession() {
  return useSyncExternalStore(onSessionChange, session);
}

const NAV: { to: string; label: string; show?: () => boolean }[] = [
  { to: "/", label: "Overview" },
  { to: "/devices", label: "Devices" },
  { to: "/rollouts", label: "Releases & rollouts" },
  { to: "/enrollment", label: "Enrollment" },
  { to: "/organization", label: "Organization" },
];

function Page({ path }: { path: string }) {
  const [first, second] = path.split("?")[0]!.split("/").slice(1).map(decodeURIComponent);
  switch (first) {
    case "":
      return <OverviewPage />;
    case "devices":
      return second ? <DevicePage id={second} /> : <DevicesPage />;
    case "rollouts":
      return second ? <RolloutPage id={second} /> : <RolloutsPage />;
    case "enrollment":
      return <EnrollmentPage />;
    case "organization":
      return <OrganizationPage />;
    default:
      return (
        <main id="main">
          <h1>Not found</h1>
          <p>
            There is no page at {path}. <Link to="/">Go to the overview</Link>.
          </p>
        </main>
      );
  }
}

function App() {
  const s = useSession();
  const path = useLocation();
  const [checked, setChecked] = useState(false);
  // A stored session is checked once: the cookie may have expired or been revoked meanwhile.
  useEffect(() => {
    if (!s) return setChecked(true);
    let stop = false;
    admin
      .whoAmI({})
      .catch(() => undefined)
      .finally(() => !stop && setChecked(true));
    const left = Date.parse(s.expiresAt) - Date.now();
    const t = setTimeout(() => expireSession(), Math.max(0, Math.min(left, 2 ** 31 - 1)));
    return () => {
      stop = true;
      clearTimeout(t);
    };
  }, [s]);
  if (path.startsWith("/login-link")) return <LinkLoginPage />;
  if (!s) return <LoginPage notice={sessionEndReason()} />;
  if (!checked) return <p className="loading">Loading…</p>;
  const section = "/" + (path.split("?")[0]!.split("/")[1] ?? "");
  return (
    <>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <span className="brand">Flotilla</span>
        <nav aria-label="Main">
          <ul>
            {NAV.filter((n) => !n.show || n.show()).map((n) => (
              <li key={n.to}>
                <Link to={n.to} aria-current={section === n.to ? "page" : undefined}>
                  {n.label}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <span className="who">
          <OrgSwitcher s={s} />
          <span title={`organization ${s.organization}`}>
            {s.name} · {s.role}
          </span>
          <button type="button" onClick={() => void logout()}>
            Log out
          </button>
        </span>
      </header>
      <Page key={`${s.organization} ${path.split("?")[0]}`} path={path} />
    </>
  );
}

/** The organizations of the admin's key, when there are several: choosing one moves the session there. */
function OrgSwitcher({ s }: { s: Session }) {
  const orgs = useLoad(() => admin.listOrganizations({}), [s.organization]);
  const [error, setError] = useState("");
  const list = orgs.data?.organizations ?? [];
  if (list.length < 2) return null;
  return (
    <>
      <label className="org" htmlFor="org-switch">
        Organization
      </label>
      <select
        id="org-switch"
        value={s.organization}
        onChange={(e) => {
          setError("");
          switchOrganization(e.target.value)
            .then(() => navigate("/"))
            .catch((err: unknown) => setError(reason(err)));
        }}
      >
        {list.map((o) => (
          <option key={o.id} value={o.name}>
            {o.name}
          </option>
        ))}
      </select>
      {error && (
        <span role="alert" className="error">
          {error}
        </span>
      )}
    </>
  );
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
