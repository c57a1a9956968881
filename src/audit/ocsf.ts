/**
 * Audit events as OCSF 1.1.0 events (the `ocsf` format of the http sink).
 *
 * Class: API Activity (class_uid 6003, category Application Activity, 6) for every event. The
 * broker is an API, and each event is an action on one of its resources (a lease, an approval
 * request, the policy set) by an actor through that API, which is what API Activity describes
 * (activity Create / Read / Update / Delete / Other on `resources`, `actor`, `api.operation`,
 * `status`). Classes considered and not used: Account Change (3001) describes changes to user
 * accounts (passwords, enable/disable, MFA); a lease is not an account. Authentication (3002)
 * describes logons; the broker's token checks are not audit events (they are in metrics and
 * logs), and the identity a lease was issued to is carried by `actor` below.
 *
 * The four questions of I8:
 * - who requested it       -> actor.user.uid (the workload id), actor.user.type (its kind, when known)
 * - which identity         -> actor.idp.name (the issuer), actor.user.name (the token's subject),
 *                             actor.user.uid_alt = "<kind>:<issuer>:<subject>"
 * - which policy allowed it -> actor.authorizations[0] {decision, policy: {uid: policy set hash,
 *                             name: determining policy ids}}
 * - how, when, by whom it ended -> activity_id 4 (Delete) on the lease resource, time, actor.user.uid
 *                             (who caused it: the owner, an operator, or "system"), status_detail
 *                             (the trigger), message (the reason)
 * The chain travels along: metadata.uid = seq; unmapped.chain = {seq, hash, prev, link_kind};
 * unmapped.event = the event as the ledger holds it (nothing is lost in translation).
 */
import type { ExportedAuditEvent } from "./ledger";

export const OCSF_VERSION = "1.1.0";
const API_ACTIVITY = 6003;

const ACTIVITY: Record<string, { id: number; name: string }> = {
  mint: { id: 1, name: "Create" },
  approval_requested: { id: 1, name: "Create" },
  decision: { id: 2, name: "Read" },
  approval_approved: { id: 3, name: "Update" },
  approval_denied: { id: 3, name: "Update" },
  approval_collected: { id: 3, name: "Update" },
  approval_expired: { id: 3, name: "Update" },
  revocation_requested: { id: 4, name: "Delete" },
  bulk_revocation: { id: 4, name: "Delete" },
  revoked: { id: 4, name: "Delete" },
  expired: { id: 4, name: "Delete" },
  task_completed: { id: 4, name: "Delete" },
  vault_orphan_revoked: { id: 4, name: "Delete" },
  aws_deny_attached: { id: 4, name: "Delete" },
  aws_session_ended: { id: 4, name: "Delete" },
  policy_reload: { id: 3, name: "Update" },
  inventory_reload: { id: 3, name: "Update" },
};

const FAILURES = new Set(["issue_failed", "revoke_failed", "approval_refused"]);

const str = (v: unknown): string | undefined => (typeof v === "string" && v.length > 0 ? v : undefined);

export function toOcsf(ev: ExportedAuditEvent): Record<string, unknown> {
  const activity = ACTIVITY[ev.type] ?? { id: 99, name: "Other" };
  const time = Date.parse(ev.at);
  const identity = ev.identity as { kind?: string; issuer?: string; subject?: string } | undefined;
  const denied = ev.type === "decision" && ev.decision !== "allow";
  const failed = FAILURES.has(ev.type) || denied || (ev.type.endsWith("_reload") && ev.ok === false);
  const policyIds = Array.isArray(ev.policy_ids) ? (ev.policy_ids as string[]) : undefined;
  const resources: Record<string, unknown>[] = [];
  if (str(ev.lease_id)) resources.push({ type: "lease", uid: ev.lease_id, ...(str(ev.role) ? { name: ev.role } : {}) });
  if (str(ev.request_id)) resources.push({ type: "approval_request", uid: ev.request_id });
  if (str(ev.task_id)) resources.push({ type: "task", uid: ev.task_id });
  if (ev.type === "policy_reload" && str(ev.policy_hash)) resources.push({ type: "policy_set", uid: ev.policy_hash });
  const user: Record<string, unknown> = { uid: ev.actor ?? "system" };
  if (identity && ev.actor === ev.workload) {
    if (str(identity.subject)) user.name = identity.subject;
    if (identity.kind && identity.issuer && identity.subject) user.uid_alt = `${identity.kind}:${identity.issuer}:${identity.subject}`;
  }
  const actor: Record<string, unknown> = { user };
  if (identity?.issuer && ev.actor === ev.workload) actor.idp = { name: identity.issuer };
  if (str(ev.policy_hash) || policyIds) {
    actor.authorizations = [
      {
        decision: str(ev.decision as string) ?? (failed ? "deny" : "allow"),
        policy: { ...(str(ev.policy_hash) ? { uid: ev.policy_hash } : {}), ...(policyIds ? { name: policyIds.join(",") } : {}) },
      },
    ];
  }
  const trigger = str(ev.trigger);
  const reason = str(ev.reason) ?? str(ev.error) ?? str(ev.note);
  return {
    category_uid: 6,
    category_name: "Application Activity",
    class_uid: API_ACTIVITY,
    class_name: "API Activity",
    activity_id: activity.id,
    activity_name: activity.name,
    type_uid: API_ACTIVITY * 100 + activity.id,
    time: Number.isNaN(time) ? undefined : time,
    severity_id: failed ? 3 : 1,
    status_id: failed ? 2 : 1,
    status: failed ? "Failure" : "Success",
    ...(trigger ? { status_detail: trigger } : {}),
    ...(reason ? { message: reason } : {}),
    actor,
    api: { operation: ev.type, service: { name: "jitbroker" } },
    ...(resources.length ? { resources } : {}),
    metadata: {
      version: OCSF_VERSION,
      uid: ev.seq,
      event_code: ev.type,
      original_time: ev.at,
      product: { name: "jitbroker", vendor_name: "jitbroker" },
      ...(str(ev.trace_id) ? { correlation_uid: ev.trace_id } : {}),
    },
    unmapped: { chain: { seq: ev.seq, hash: ev.hash, prev: ev.prev, link_kind: ev.link_kind }, event: ev },
  };
}
