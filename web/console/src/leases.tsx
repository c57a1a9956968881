import { useState } from "preact/hooks";
import { api, q } from "./api";
import { Remaining, RevokeFlow, StateBadge, Updated, time } from "./components";
import { usePolled } from "./hooks";
import type { Lease, LeaseHistory } from "./types";

const STATES = ["", "issuing", "active", "revoking", "revoked", "expired", "revoke_failed"];
const FILTERS = [
  ["workload", "Workload"],
  ["task_id", "Task"],
  ["role", "Role"],
  ["issuer", "Issuer"],
] as const;

type Filters = Record<"workload" | "task_id" | "role" | "issuer" | "state", string>;

export function LeasesView({ initial }: { initial: URLSearchParams }) {
  const blank: Filters = { workload: "", task_id: "", role: "", issuer: "", state: "" };
  for (const k of Object.keys(blank) as (keyof Filters)[]) blank[k] = initial.get(k) ?? "";
  const [draft, setDraft] = useState<Filters>(blank);
  const [filters, setFilters] = useState<Filters>(blank);
  const list = usePolled((refresh) => api<{ leases: Lease[]; next_cursor: string | null }>(`/v1/admin/leases${q({ ...filters, limit: "200" })}`, { refresh }), [JSON.stringify(filters)]);

  function apply(e: Event) {
    e.preventDefault();
    setFilters({ ...draft });
    const p = new URLSearchParams(Object.entries(draft).filter(([, v]) => v !== ""));
    history.replaceState(null, "", `#/leases${p.toString() ? `?${p}` : ""}`);
  }
  const set = (k: keyof Filters) => (e: Event) => setDraft({ ...draft, [k]: (e.target as HTMLInputElement).value });

  return (
    <div>
      <h1>Leases</h1>
      <form class="filters" onSubmit={apply} aria-label="Filter leases">
        {FILTERS.map(([k, label]) => (
          <div class="field" key={k}>
            <label for={`f-${k}`}>{label}</label>
            <input id={`f-${k}`} type="text" value={draft[k]} onInput={set(k)} />
          </div>
        ))}
        <div class="field">
          <label for="f-state">State</label>
          <select id="f-state" value={draft.state} onChange={set("state")}>
            {STATES.map((s) => (
              <option value={s} key={s}>
                {s || "any"}
              </option>
            ))}
          </select>
        </div>
        <button type="submit">Filter</button>
      </form>
      <Updated at={list.updatedAt} error={list.error} />
      {list.data && (
        <table>
          <caption>
            {list.data.leases.length} {list.data.leases.length === 1 ? "lease" : "leases"}
            {list.data.next_cursor ? " (newest 200 shown; narrow the filters to see others)" : ""}
          </caption>
          <thead>
            <tr>
              <th scope="col">Lease</th>
              <th scope="col">Workload</th>
              <th scope="col">Task</th>
              <th scope="col">Role</th>
              <th scope="col">Issuer</th>
              <th scope="col">State</th>
              <th scope="col">Remaining</th>
              <th scope="col">Issued</th>
            </tr>
          </thead>
          <tbody>
            {list.data.leases.map((l) => (
              <tr key={l.id}>
                <td>
                  <a class="mono" href={`#/leases/${encodeURIComponent(l.id)}`}>
                    {l.id}
                  </a>
                </td>
                <td>{l.workload}</td>
                <td class="mono">{l.task_id}</td>
                <td>{l.role}</td>
                <td>{l.identity.issuer}</td>
                <td>
                  <StateBadge state={l.state} />
                </td>
                <td>
                  <Remaining expiresAt={l.expires_at} state={l.state} />
                </td>
                <td>{time(l.issued_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

function Pair({ k, v }: { k: string; v: string | number | undefined | null }) {
  return (
    <>
      <dt>{k}</dt>
      <dd>{v === undefined || v === null || v === "" ? "—" : String(v)}</dd>
    </>
  );
}

export function LeaseDetailView({ id }: { id: string }) {
  const h = usePolled((refresh) => api<LeaseHistory>(`/v1/admin/leases/${encodeURIComponent(id)}/history`, { refresh }), [id]);
  // Once a revocation starts here, its progress stays on screen after the lease has ended.
  const [revoking, setRevoking] = useState(false);
  if (!h.data) {
    return (
      <div>
        <h1>Lease</h1>
        <p class="mono">{id}</p>
        <Updated at={h.updatedAt} error={h.error} />
      </div>
    );
  }
  const { lease, requested_by, identity, allowed_by, ended, events } = h.data;
  const live = lease.state === "active" || lease.state === "issuing";
  return (
    <div>
      <h1>Lease</h1>
      <p class="mono lease-id">{lease.id}</p>
      <p>
        <StateBadge state={lease.state} /> {lease.role} ({lease.backend}, {lease.revocation_kind}) · expires {time(lease.expires_at)} ·{" "}
        <Remaining expiresAt={lease.expires_at} state={lease.state} />
      </p>
      <Updated at={h.updatedAt} error={h.error} />
      <div class="questions">
        <section>
          <h2>Who requested it</h2>
          <dl>
            <Pair k="Workload" v={requested_by.workload} />
            <Pair k="Task" v={requested_by.task.id} />
            <Pair k="Intent" v={requested_by.task.intent} />
            <Pair k="Tool" v={requested_by.task.tool} />
            <Pair k="Destination" v={requested_by.task.destination} />
            <Pair k="Sensitivity" v={requested_by.task.sensitivity} />
            {lease.parent_lease_id !== undefined && (
              <>
                <dt>Delegated from</dt>
                <dd>
                  <a class="mono" href={`#/leases/${encodeURIComponent(lease.parent_lease_id)}`}>
                    {lease.parent_lease_id}
                  </a>
                </dd>
              </>
            )}
            {lease.on_behalf_of !== undefined && <Pair k="On behalf of" v={`${lease.on_behalf_of.subject ?? ""} (${lease.on_behalf_of.issuer ?? ""})`} />}
          </dl>
        </section>
        <section>
          <h2>Which identity</h2>
          <dl>
            <Pair k="Kind" v={identity.kind} />
            <Pair k="Issuer" v={identity.issuer} />
            <Pair k="Subject" v={identity.subject} />
          </dl>
        </section>
        <section>
          <h2>Which policy allowed it</h2>
          <dl>
            <Pair k="Policies" v={allowed_by.ids.join(", ")} />
            <Pair k="Policy set hash" v={allowed_by.hash} />
            {lease.approval && <Pair k="Approved by" v={`${lease.approval.approved_by} (request ${lease.approval.request_id})`} />}
          </dl>
        </section>
        <section>
          <h2>How it ended</h2>
          {ended ? (
            <dl>
              <Pair k="State" v={ended.state} />
              <Pair k="Trigger" v={ended.trigger} />
              <Pair k="By" v={ended.by} />
              <Pair k="Reason" v={ended.reason} />
              <Pair k="Revoked at" v={time(ended.revoked_at)} />
              {lease.last_error && <Pair k="Last error" v={lease.last_error} />}
            </dl>
          ) : (
            <p>Not ended yet.</p>
          )}
        </section>
      </div>
      {(live || revoking) && (
        <section>
          <h2>Revoke this lease</h2>
          <RevokeFlow selector="lease_id" value={lease.id} idPrefix="lease" onStart={() => setRevoking(true)} onDone={() => h.reload()} />
        </section>
      )}
      <section>
        <h2>Event history</h2>
        <table>
          <thead>
            <tr>
              <th scope="col">At</th>
              <th scope="col">Event</th>
              <th scope="col">Actor</th>
              <th scope="col">Details</th>
            </tr>
          </thead>
          <tbody>
            {events.map((e) => {
              const { type, at, actor, seq: _s, hash: _h, prev: _p, lease_id: _l, ...rest } = e;
              return (
                <tr key={e.seq}>
                  <td>{time(at)}</td>
                  <td>{type}</td>
                  <td>{actor ?? "—"}</td>
                  <td class="mono details">{JSON.stringify(rest)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </section>
    </div>
  );
}
