import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, q } from "./api";
import { useNow } from "./hooks";
import type { RevocationProgress } from "./types";

export function remaining(expiresAt: string, now: number): string {
  const s = Math.round((Date.parse(expiresAt) - now) / 1000);
  if (s <= 0) return "due now";
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function Remaining({ expiresAt, state }: { expiresAt: string; state: string }) {
  const now = useNow();
  if (state !== "active" && state !== "issuing") return <span class="muted">—</span>;
  return <span>{remaining(expiresAt, now)}</span>;
}

export const time = (iso: string | null | undefined) => (iso ? new Date(iso).toLocaleString() : "—");

export function Updated({ at, error }: { at: Date | null; error: string | null }) {
  return (
    <p class="updated" aria-live="polite">
      {error ? <span class="error">{error}</span> : at ? `Updated ${at.toLocaleTimeString()} · refreshes every 5 seconds` : "Loading…"}
    </p>
  );
}

export function StateBadge({ state }: { state: string }) {
  return <span class={`badge state-${state}`}>{state}</span>;
}

export function Section({ title, children }: { title: string; children: ComponentChildren }) {
  return (
    <section>
      <h2>{title}</h2>
      {children}
    </section>
  );
}

export type Selector = "lease_id" | "task_id" | "workload" | "role" | "issuer";
export const SELECTOR_LABEL: Record<Selector, string> = { lease_id: "Lease", task_id: "Task", workload: "Workload", role: "Role", issuer: "Issuer" };

/**
 * Revocation in three steps: a reason (labelled "Reason") and a review, a confirmation that says
 * how many leases will end, then live progress until the broker reports the operation complete.
 */
export function RevokeFlow({ selector, value, onDone, onStart, idPrefix }: { selector: Selector; value: string; onDone?: () => void; onStart?: () => void; idPrefix: string }) {
  const [reason, setReason] = useState("");
  const [step, setStep] = useState<"form" | "confirm" | "running">("form");
  const [matched, setMatched] = useState(0);
  const [error, setError] = useState<string | null>(null);
  const [progress, setProgress] = useState<RevocationProgress | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    setStep("form");
    setProgress(null);
    setError(null);
  }, [selector, value]);

  useEffect(() => {
    if (step !== "running" || !progress || progress.state !== "running") return;
    const t = setTimeout(async () => {
      try {
        setProgress(await api<RevocationProgress>(`/v1/admin/revocations/${encodeURIComponent(progress.id)}`));
      } catch (e) {
        setError(e instanceof ApiError ? e.message : "Progress could not be read.");
      }
    }, 1000);
    return () => clearTimeout(t);
  }, [step, progress]);

  useEffect(() => {
    if (progress && progress.state !== "running") onDone?.();
  }, [progress?.state]);

  async function review(e: Event) {
    e.preventDefault();
    setError(null);
    if (!value.trim()) return setError(`Give the ${SELECTOR_LABEL[selector].toLowerCase()} to revoke.`);
    if (!reason.trim()) return setError("Give a reason: it is recorded in the audit ledger and shown on each lease.");
    setBusy(true);
    try {
      const r = await api<{ matched: number }>(`/revocations/preview${q({ [selector]: value.trim() })}`);
      setMatched(r.matched);
      setStep("confirm");
    } catch (err) {
      setError(err instanceof ApiError ? err.message : "The preview failed.");
    } finally {
      setBusy(false);
    }
  }

  async function confirm() {
    setError(null);
    setBusy(true);
    try {
      const r = await api<{ id: string; matched: number }>("/v1/admin/revocations", { method: "POST", body: { [selector]: value.trim(), reason: reason.trim() } });
      onStart?.();
      setProgress({ id: r.id, matched: r.matched, triggered: 0, revoked: 0, failed: 0, state: "running" });
      setStep("running");
    } catch (err) {
      setError(err instanceof ApiError ? err.message : "The revocation failed.");
    } finally {
      setBusy(false);
    }
  }

  const reasonId = `${idPrefix}-reason`;
  return (
    <div class="revoke">
      {step === "form" && (
        <form onSubmit={review}>
          <label for={reasonId}>Reason</label>
          <input id={reasonId} type="text" maxLength={500} value={reason} onInput={(e) => setReason((e.target as HTMLInputElement).value)} required />
          <button type="submit" disabled={busy}>
            Review revocation
          </button>
        </form>
      )}
      {step === "confirm" && (
        <div class="confirm" role="alertdialog" aria-labelledby={`${idPrefix}-confirm`}>
          <p id={`${idPrefix}-confirm`}>
            {matched === 0
              ? `No live lease matches ${SELECTOR_LABEL[selector].toLowerCase()} "${value}": nothing will end.`
              : `This will end ${matched} ${matched === 1 ? "lease" : "leases"} of ${SELECTOR_LABEL[selector].toLowerCase()} "${value}" now. Reason: "${reason}".`}
          </p>
          <button type="button" class="danger" onClick={confirm} disabled={busy} autoFocus>
            Revoke
          </button>{" "}
          <button type="button" onClick={() => setStep("form")}>
            Cancel
          </button>
        </div>
      )}
      {step === "running" && progress && (
        <div role="status" aria-live="polite" class="progress">
          <progress max={Math.max(1, progress.matched)} value={progress.revoked + progress.failed} />
          <p>
            {progress.state === "running" ? "Revoking: " : progress.state === "completed" ? "Done: " : "Done, with failures: "}
            {progress.revoked} of {progress.matched} revoked
            {progress.failed > 0 ? `, ${progress.failed} failed (retried by the worker; see Health)` : ""}.
          </p>
        </div>
      )}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}
