/**
 * The operators' console front end: a hash-routed single page over /console/api. Workload text
 * (ids, owners, purposes, task intents, reasons, errors) is rendered by Preact as text nodes,
 * never as markup; nothing here uses innerHTML.
 */
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, setCsrf, whenSignedOut } from "./api";
import { LeaseDetailView, LeasesView } from "./leases";
import type { Session } from "./types";
import { ApprovalsView, HealthView, RevokeView, WorkloadsView } from "./views";

function parseRoute(hash: string): { path: string[]; params: URLSearchParams } {
  const [p = "", query = ""] = hash.replace(/^#\/?/, "").split("?", 2);
  return { path: p.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query) };
}

const NAV: [string, string][] = [
  ["leases", "Leases"],
  ["approvals", "Approvals"],
  ["workloads", "Workloads"],
  ["revoke", "Revoke"],
  ["health", "Health"],
];

function SignedOut({ reason }: { reason: string }) {
  return (
    <main class="narrow" id="main">
      <h1>Signed out</h1>
      <p role="alert">{reason}</p>
      <p>
        <a class="button primary" href="/console/login">
          Sign in
        </a>
      </p>
    </main>
  );
}

function App() {
  const [session, setSession] = useState<Session | null>(null);
  const [signedOut, setSignedOut] = useState<string | null>(null);
  const [hash, setHash] = useState(location.hash || "#/leases");

  useEffect(() => {
    whenSignedOut((reason) => setSignedOut(reason));
    const onHash = () => setHash(location.hash || "#/leases");
    addEventListener("hashchange", onHash);
    api<Session>("/session")
      .then((s) => {
        setCsrf(s.csrf_token);
        setSession(s);
      })
      .catch((e) => setSignedOut(e instanceof ApiError ? e.message : "The console could not load your session."));
    return () => removeEventListener("hashchange", onHash);
  }, []);

  const route = parseRoute(hash);
  useEffect(() => {
    const h = document.querySelector("main h1");
    document.title = `${h?.textContent ?? "Console"} · jitbroker console`;
  });

  if (signedOut !== null) return <SignedOut reason={signedOut} />;
  if (!session) return <main class="narrow"><p>Loading the console…</p></main>;

  async function signOut() {
    try {
      await api("/logout", { method: "POST", body: {} });
    } finally {
      location.assign("/console/");
    }
  }

  const [top = "leases", id] = route.path;
  let view;
  if (top === "leases" && id) view = <LeaseDetailView id={id} />;
  else if (top === "approvals") view = <ApprovalsView session={session} />;
  else if (top === "workloads") view = <WorkloadsView session={session} />;
  else if (top === "revoke") view = <RevokeView initial={route.params} key={hash} />;
  else if (top === "health") view = <HealthView />;
  else view = <LeasesView initial={route.params} key={hash} />;

  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header>
        <span class="brand">jitbroker console</span>
        <nav aria-label="Views">
          <ul>
            {NAV.map(([k, label]) => (
              <li key={k}>
                <a href={`#/${k}`} aria-current={top === k ? "page" : undefined}>
                  {label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <span class="who">
          {session.operator.id} <span class="muted">({session.operator.owner})</span>
        </span>
        <button type="button" onClick={signOut}>
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {view}
      </main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
