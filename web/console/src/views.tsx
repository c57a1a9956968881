import { useEffect, useState } from "preact/hooks";
import { api, ApiError, q } from "./api";
import { RevokeFlow, SELECTOR_LABEL, Section, StateBadge, Updated, time, type Selector } from "./components";
import { usePolled } from "./hooks";
import type { ApprovalRequest, Health, Session, WorkloadRow } from "./types";

export function RevokeView({ initial }: { initial: URLSearchParams }) {
  const first = (Object.keys(SELECTOR_LABEL) as Selector[]).find((k) => initial.get(k));
  const [selector, setSelector] = useState<Selector>(first ?? "task_id");
  const [value, setValue] = useState(first ? (initial.get(first) ?? "") : "");
  return (
    <div>
      <h1>Revoke leases</h1>
      <p>End every live lease of one lease id, task, workload, role or identity issuer. The broker revokes them at their backends and records who did it and why.</p>
      <div class="filters">
        <div class="field">
          <label for="rv-by">Revoke by</label>
          <select id="rv-by" value={selector} onChange={(e) => setSelector((e.target as HTMLSelectElement).value as Selector)}>
            {(Object.keys(SELECTOR_LABEL) as Selector[]).map((k) => (
              <option value={k} key={k}>
                {SELECTOR_LABEL[k]}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="rv-value">{SELECTOR_LABEL[selector]}</label>
          <input id="rv-value" type="text" value={value} onInput={(e) => setValue((e.target as HTMLInputElement).value)} />
        </div>
      </div>
      <RevokeFlow selector={selector} value={value} idPrefix="bulk" />
    </div>
  );
}

function Decide({ r, session, onDone }: { r: ApprovalRequest; session: Session; onDone: () => void }) {
  const [reason, setReason] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const own = r.workload === session.operator.id;
  async function decide(outcome: "approve" | "deny") {
    setBusy(true);
    setError(null);
    try {
      await api(`/v1/admin/requests/${encodeURIComponent(r.id)}/${outcome}`, { method: "POST", body: reason.trim() ? { reason: reason.trim() } : {} });
      onDone();
    } catch (e) {
      setError(e instanceof ApiError ? e.message : "The decision failed.");
    } finally {
      setBusy(false);
    }
  }
  const rid = `reason-${r.id}`;
  return (
    <div class="decide">
      <label for={rid}>Reason</label>
      <input id={rid} type="text" maxLength={500} value={reason} onInput={(e) => setReason((e.target as HTMLInputElement).value)} />
      <button type="button" class="primary" disabled={busy || own} onClick={() => decide("approve")} aria-describedby={own ? `${rid}-own` : undefined}>
        Approve
      </button>
      <button type="button" class="danger" disabled={busy} onClick={() => decide("deny")}>
        Deny
      </button>
      {own && (
        <p id={`${rid}-own`} class="muted">
          Your own request: another operator must approve it.
        </p>
      )}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}

export function ApprovalsView({ session }: { session: Session }) {
  const pending = usePolled((refresh) => api<{ requests: ApprovalRequest[] }>(`/v1/admin/requests${q({ state: "pending_approval", limit: "100" })}`, { refresh }), []);
  const recent = usePolled((refresh) => api<{ requests: ApprovalRequest[] }>(`/v1/admin/requests${q({ limit: "20" })}`, { refresh }), []);
  const reload = () => (pending.reload(), recent.reload());
  const decided = (recent.data?.requests ?? []).filter((r) => r.state !== "pending_approval");
  return (
    <div>
      <h1>Approvals</h1>
      <Updated at={pending.updatedAt} error={pending.error} />
      <Section title="Pending">
        {pending.data && pending.data.requests.length === 0 && <p>No request is waiting for approval.</p>}
        <ul class="cards">
          {pending.data?.requests.map((r) => (
            <li key={r.id} class="card">
              <h3>
                {r.workload} asks for {r.role}
              </h3>
              <dl>
                <dt>Request</dt>
                <dd class="mono">{r.id}</dd>
                <dt>Task</dt>
                <dd class="mono">{r.task_id}</dd>
                <dt>Intent</dt>
                <dd>{r.task.intent || "—"}</dd>
                <dt>TTL</dt>
                <dd>{r.ttl_seconds !== undefined ? `${r.ttl_seconds} s` : "role default"}</dd>
                <dt>Asked</dt>
                <dd>{time(r.created_at)}</dd>
                <dt>Expires</dt>
                <dd>{time(r.expires_at)}</dd>
              </dl>
              <Decide r={r} session={session} onDone={reload} />
            </li>
          ))}
        </ul>
      </Section>
      <Section title="Recently decided">
        <table>
          <thead>
            <tr>
              <th scope="col">Request</th>
              <th scope="col">Workload</th>
              <th scope="col">Role</th>
              <th scope="col">State</th>
              <th scope="col">By</th>
              <th scope="col">Reason</th>
            </tr>
          </thead>
          <tbody>
            {decided.map((r) => (
              <tr key={r.id}>
                <td class="mono">{r.id}</td>
                <td>{r.workload}</td>
                <td>{r.role}</td>
                <td>
                  <StateBadge state={r.state} />
                </td>
                <td>{r.decided_by ?? "—"}</td>
                <td>{r.reason ?? "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </Section>
    </div>
  );
}

export function WorkloadsView({ session }: { session: Session }) {
  const list = usePolled((refresh) => api<{ workloads: WorkloadRow[] }>("/workloads", { refresh }), []);
  return (
    <div>
      <h1>Workloads</h1>
      <Updated at={list.updatedAt} error={list.error} />
      <table>
        <thead>
          <tr>
            <th scope="col">Workload</th>
            <th scope="col">Kind</th>
            <th scope="col">Owner</th>
            <th scope="col">Purpose</th>
            <th scope="col">Issuer</th>
            <th scope="col">Live leases</th>
            <th scope="col">Last lease issued</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {list.data?.workloads.map((w) => (
            <tr key={w.id}>
              <td>
                <a href={`#/leases?workload=${encodeURIComponent(w.id)}`}>{w.id}</a>
              </td>
              <td>{w.kind}</td>
              <td>{w.owner}</td>
              <td>{w.purpose}</td>
              <td>{w.issuer}</td>
              <td>{w.live_leases}</td>
              <td>{time(w.last_lease_at)}</td>
              <td>
                {session.can.admin_revoke && w.live_leases > 0 && (
                  <button type="button" class="danger" onClick={() => (location.hash = `#/revoke?workload=${encodeURIComponent(w.id)}`)} aria-label={`Revoke all leases of ${w.id}`}>
                    Revoke all
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function HealthView() {
  const h = usePolled((refresh) => api<Health>("/health", { refresh }), []);
  const [audit, setAudit] = useState<{ ok: boolean; checked: number; firstBreak?: { seq: string; reason: string }; verified_at: string } | null>(null);
  const [auditError, setAuditError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  async function verify() {
    setBusy(true);
    setAuditError(null);
    try {
      setAudit(await api("/audit/verify"));
    } catch (e) {
      setAuditError(e instanceof ApiError ? e.message : "The verification failed.");
    } finally {
      setBusy(false);
    }
  }
  useEffect(() => void verify(), []);
  const d = h.data;
  return (
    <div>
      <h1>Health</h1>
      <Updated at={h.updatedAt} error={h.error} />
      {d && (
        <div class="questions">
          <section>
            <h2>Broker</h2>
            <dl>
              <dt>Ready</dt>
              <dd>{d.readiness.ready ? "yes" : "no"}</dd>
              <dt>Redis</dt>
              <dd>
                {d.readiness.checks.redis} · {d.redis.mode} · role {d.redis.role}
              </dd>
              <dt>Live leases</dt>
              <dd>{d.leases.live}</dd>
              <dt>revoke_failed</dt>
              <dd>{d.leases.revoke_failed}</dd>
            </dl>
          </section>
          <section>
            <h2>Backends</h2>
            <dl>
              {d.readiness.checks.backends.map((b) => [
                <dt key={`${b.name}-t`}>{b.name}</dt>,
                <dd key={`${b.name}-d`}>
                  <StateBadge state={b.state} /> {b.detail ?? ""}
                </dd>,
              ])}
            </dl>
          </section>
          <section>
            <h2>Identity issuers</h2>
            <dl>
              {d.readiness.checks.issuers.map((i) => [
                <dt key={`${i.name}-t`}>{i.name}</dt>,
                <dd key={`${i.name}-d`}>{i.last_error ? `error: ${String(i.last_error)}` : `${String(i.keys ?? "?")} keys loaded`}</dd>,
              ])}
            </dl>
          </section>
          <section>
            <h2>Audit sinks</h2>
            {d.readiness.checks.audit_sinks && d.readiness.checks.audit_sinks.length > 0 ? (
              <dl>
                {d.readiness.checks.audit_sinks.map((s) => [
                  <dt key={`${s.name}-t`}>
                    {s.name} ({s.type})
                  </dt>,
                  <dd key={`${s.name}-d`}>
                    <StateBadge state={s.state} /> lag {s.lag_seconds} s · delivered up to {s.position ?? "nothing yet"}
                    {s.consecutive_failures > 0 ? ` · ${s.consecutive_failures} failures in a row` : ""}
                    {s.last_error ? ` · ${s.last_error}` : ""}
                  </dd>,
                ])}
              </dl>
            ) : (
              <p>No sinks configured: the audit chain lives only in Redis.</p>
            )}
          </section>
          <section>
            <h2>Audit chain</h2>
            <p>
              <button type="button" onClick={verify} disabled={busy}>
                Verify audit chain
              </button>
            </p>
            <p role="status" aria-live="polite">
              {audit
                ? audit.ok
                  ? `Intact: ${audit.checked} events checked at ${time(audit.verified_at)}.`
                  : `BROKEN at ${audit.firstBreak?.seq ?? "?"}: ${audit.firstBreak?.reason ?? ""} (${audit.checked} events checked).`
                : busy
                  ? "Verifying…"
                  : "Not verified in this view yet."}
            </p>
            {auditError && <p class="error">{auditError}</p>}
          </section>
        </div>
      )}
      {d && (
        <Section title="Leases whose revocation keeps failing">
          {d.revoke_failed.length === 0 ? (
            <p>None: every revocation succeeded.</p>
          ) : (
            <table>
              <thead>
                <tr>
                  <th scope="col">Lease</th>
                  <th scope="col">Workload</th>
                  <th scope="col">Role</th>
                  <th scope="col">Attempts</th>
                  <th scope="col">Last error</th>
                </tr>
              </thead>
              <tbody>
                {d.revoke_failed.map((l) => (
                  <tr key={l.id}>
                    <td>
                      <a class="mono" href={`#/leases/${encodeURIComponent(l.id)}`}>
                        {l.id}
                      </a>
                    </td>
                    <td>{l.workload}</td>
                    <td>{l.role}</td>
                    <td>{l.revoke_attempts ?? "—"}</td>
                    <td>{l.last_error ?? "—"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </Section>
      )}
    </div>
  );
}
