/**
 * Operator commands: `leases` (a table or JSON, following cursors), `revoke` (a bulk revocation
 * with progress until it finishes, then a summary), `history` (the four questions of I8 in plain
 * words), and `whoami`.
 */
import { SingleBar } from "cli-progress";
import { Command, Option } from "commander";
import type { BrokerClient } from "../../client/client";
import type { Lease, LeaseFilter, LeaseHistory, LeaseState, RevocationProgress, RevocationSelector } from "../../client/types";
import { LEASE_STATES } from "../../leases/types";
import { CliError } from "../errors";
import { print, printErr, visible, visibleDeep } from "../text";
import { action, clientFrom, duration, withClientFlags, type ClientFlags } from "./common";

const STATES: readonly LeaseState[] = LEASE_STATES;

/** Left-aligned columns, two spaces apart; the last column is not padded. */
export function table(header: string[], rawRows: (string | undefined)[][]): string {
  // Cells come from the broker: control characters made visible before widths are measured.
  const rows = rawRows.map((r) => r.map((c) => visible(c)));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].map((l) => `${l}\n`).join("");
}

function ended(l: Lease): string {
  if (!l.revocation) return "";
  return `${l.revocation.trigger}${l.revocation.by ? ` by ${l.revocation.by}` : ""}`;
}

export function leaseRows(leases: Lease[]): string {
  return table(
    ["LEASE", "STATE", "WORKLOAD", "ROLE", "TASK", "ISSUED", "EXPIRES", "ENDED"],
    leases.map((l) => [l.id, l.state, l.workload, l.role, l.task_id, l.issued_at, l.expires_at, ended(l)]),
  );
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** The I8 answers of a lease's history, in plain words. */
export function describeHistory(answer: LeaseHistory): string {
  const h = visibleDeep(answer);
  const l = h.lease;
  const task = h.requested_by.task;
  const context = (["intent", "tool", "destination", "sensitivity"] as const).filter((k) => task[k]).map((k) => `${k} "${task[k]}"`);
  const policies = h.allowed_by.ids.length ? h.allowed_by.ids.join(", ") : "(no policy id recorded)";
  let end: string;
  const e = h.ended;
  const when = e?.revoked_at ?? l.revoked_at ?? e?.at ?? "";
  const why = e?.reason ? `: "${e.reason}"` : "";
  if (!e) {
    end = l.state === "active" || l.state === "issuing" ? `it has not ended: ${l.state}, expires at ${l.expires_at}` : `it is ${l.state}`;
  } else if (l.state === "revoking" || l.state === "revoke_failed") {
    const by = e.by ? ` by ${e.by}` : "";
    end =
      `revocation was triggered (${e.trigger}${by}) at ${e.at ?? "?"}${why}; ` +
      (l.state === "revoke_failed"
        ? `the backend has not confirmed it after ${plural(l.revoke_attempts ?? 0, "attempt")} (last error: ${l.last_error ?? "unknown"}); the worker keeps retrying`
        : "the worker is revoking it");
  } else {
    const verb = l.state === "expired" ? "expired" : "revoked";
    switch (e.trigger) {
      case "expiry":
        end = `${verb} at ${when} when its time ran out`;
        break;
      case "task_completed":
        end = `${verb} at ${when}: its task was completed${e.by ? ` by ${e.by}` : ""}`;
        break;
      case "owner":
        end = `${verb} at ${when} by its owner ${e.by ?? ""}`.trimEnd() + why;
        break;
      case "operator":
        end = `${verb} at ${when} by operator ${e.by ?? "?"}${why}`;
        break;
      case "policy_change":
        end = `${verb} at ${when}: the policy no longer allowed it${why}`;
        break;
      case "issue_failed":
        end = `${verb} at ${when}: the credential could not be issued${why}`;
        break;
      case "parent_revoked":
        end = `${verb} at ${when}: the lease it was delegated from was revoked${e.by ? ` (by ${e.by})` : ""}${why}`;
        break;
      default:
        end = `${verb} at ${when} (${String(e.trigger)})${why}`;
    }
  }
  if (l.backend_expires_at) end += ` (the ${l.backend} credential itself stays valid until ${l.backend_expires_at}; revocation: ${l.revocation_kind})`;
  const lines = [
    `lease ${l.id}: role ${l.role} (${l.backend}) for workload ${l.workload}, task ${l.task_id}: ${l.state}`,
    `  who requested it:        workload ${h.requested_by.workload}, at ${l.issued_at}, for task ${task.id}${context.length ? ` (${context.join(", ")})` : ""}`,
    ...(h.requested_by.chain ? [`  through the chain:       ${h.requested_by.chain.join(" -> ")} (delegated ${plural(h.delegation?.depth ?? h.requested_by.chain.length - 1, "hop")} from lease ${h.delegation?.parent_lease_id ?? "?"})`] : []),
    ...(h.requested_by.on_behalf_of ? [`  on behalf of:            ${h.requested_by.on_behalf_of.subject} (users issuer ${h.requested_by.on_behalf_of.issuer})`] : []),
    ...(h.delegation?.ancestors ?? []).map((a, i) => `  ${`${i === 0 ? "root lease" : `hop ${i} lease`}:`.padEnd(25)}${a.id} (${a.workload ?? "?"}, ${a.state}${a.policy_ids?.length ? `, allowed by ${a.policy_ids.join(", ")}` : ""})`),
    `  with which identity:     ${h.identity.kind} token from issuer ${h.identity.issuer}, subject ${h.identity.subject}`,
    `  which policy allowed it: ${policies} (policy set ${h.allowed_by.hash})`,
    `  how it ended:            ${end}`,
    `events (${h.events.length}):`,
  ];
  for (const ev of h.events) {
    const bits: string[] = [];
    for (const k of ["decision", "policy_ids", "trigger", "actor", "reason", "attempts", "error", "note"] as const) {
      const v = ev[k];
      if (v === undefined || v === "" || (Array.isArray(v) && v.length === 0)) continue;
      bits.push(`${k} ${Array.isArray(v) ? v.join(",") : typeof v === "string" ? v : JSON.stringify(v)}`);
    }
    lines.push(`  ${ev.at}  ${ev.type.padEnd(20)}  ${bits.join("; ")}`.trimEnd());
  }
  if (h.evidence) lines.push(`  ${h.evidence.note}`);
  return lines.map((x) => `${x}\n`).join("");
}

interface RevokeFlags extends ClientFlags {
  lease?: string;
  task?: string;
  workload?: string;
  role?: string;
  issuer?: string;
  reason: string;
  json?: boolean;
  wait: boolean;
  timeout: string;
  maxWait: string;
  interval: string;
}

function selectorOf(f: RevokeFlags): RevocationSelector {
  const given = (
    [
      ["--lease", f.lease, (v: string) => ({ lease_id: v })],
      ["--task", f.task, (v: string) => ({ task_id: v })],
      ["--workload", f.workload, (v: string) => ({ workload: v })],
      ["--role", f.role, (v: string) => ({ role: v })],
      ["--issuer", f.issuer, (v: string) => ({ issuer: v })],
    ] as const
  ).filter(([, v]) => v !== undefined);
  if (given.length !== 1) throw new CliError(`give exactly one of --lease, --task, --workload, --role, --issuer${given.length ? ` (got ${given.map(([n]) => n).join(", ")})` : ""}`, 2);
  const [, value, make] = given[0]!;
  return make(value!);
}

/** The selector as a lease-list filter, to find the leases whose revocation failed. */
function failedFilter(sel: RevocationSelector): LeaseFilter | null {
  if ("lease_id" in sel) return null;
  return { ...sel, state: "revoke_failed" };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls a bulk revocation until it is no longer running; shows progress on stderr. */
async function follow(client: BrokerClient, id: string, matched: number, opts: { intervalMs: number; maxWaitMs: number }): Promise<{ progress: RevocationProgress; finished: boolean }> {
  const tty = process.stderr.isTTY === true;
  const bar = tty
    ? new SingleBar({ format: "revoking |{bar}| {value}/{total} done ({failed} failed) {duration_formatted}", stream: process.stderr, hideCursor: true, clearOnComplete: false })
    : null;
  const started = Date.now();
  let lastLine = 0;
  let lastDone = -1;
  let progress: RevocationProgress;
  bar?.start(Math.max(matched, 1), 0, { failed: 0 });
  try {
    for (;;) {
      progress = await client.getRevocation(id);
      const total = Math.max(progress.matched, progress.triggered);
      const done = progress.revoked + progress.failed;
      if (bar) {
        bar.setTotal(Math.max(total, 1));
        bar.update(done, { failed: progress.failed });
      } else if (done !== lastDone && (Date.now() - lastLine >= 1000 || progress.state !== "running")) {
        // Not a terminal: a plain line at most once a second, when something changed.
        printErr(`revoking: ${done}/${total} done (${progress.revoked} revoked, ${progress.failed} failed)\n`);
        lastLine = Date.now();
        lastDone = done;
      }
      if (progress.state !== "running") return { progress, finished: true };
      if (Date.now() - started > opts.maxWaitMs) return { progress, finished: false };
      await sleep(opts.intervalMs);
    }
  } finally {
    bar?.stop();
  }
}

export function registerOperatorCommands(program: Command): void {
  withClientFlags(
    program
      .command("leases")
      .description("list leases (operators)")
      .option("--workload <id>", "only this workload's")
      .option("--task <id>", "only this task's")
      .option("--role <name>", "only this role's")
      .option("--issuer <name>", "only leases of workload tokens from this issuer")
      .addOption(new Option("--state <state>", "only leases in this state").choices(STATES))
      .option("--limit <n>", "show at most this many (0: all)", "100")
      .option("--json", "print a JSON array of leases"),
  ).action(
    action(async (f: ClientFlags & { workload?: string; task?: string; role?: string; issuer?: string; state?: LeaseState; limit: string; json?: boolean }) => {
      const limit = Number(f.limit);
      if (!Number.isInteger(limit) || limit < 0) throw new CliError(`--limit ${f.limit}: a whole number (0 for all)`, 2);
      const client = clientFrom(f);
      const filter: LeaseFilter = {
        ...(f.workload === undefined ? {} : { workload: f.workload }),
        ...(f.task === undefined ? {} : { task_id: f.task }),
        ...(f.role === undefined ? {} : { role: f.role }),
        ...(f.issuer === undefined ? {} : { issuer: f.issuer }),
        ...(f.state === undefined ? {} : { state: f.state }),
      };
      const leases: Lease[] = [];
      for await (const l of client.leases(filter, limit === 0 ? {} : { max: limit + 1 })) leases.push(l);
      const more = limit > 0 && leases.length > limit;
      if (more) leases.length = limit;
      if (f.json) process.stdout.write(`${JSON.stringify(leases, null, 2)}\n`);
      else if (leases.length === 0) print("no leases match\n");
      else print(leaseRows(leases));
      if (more) printErr(`(the first ${limit}; more leases match: raise --limit, 0 for all)\n`);
    }),
  );

  withClientFlags(
    program
      .command("revoke")
      .description("revoke leases now (operators): one lease, or every live lease of a task, workload, role or issuer")
      .option("--lease <id>", "one lease")
      .option("--task <id>", "every live lease of this task")
      .option("--workload <id>", "every live lease of this workload")
      .option("--role <name>", "every live lease of this role")
      .option("--issuer <name>", "every live lease of workload tokens from this issuer")
      .requiredOption("--reason <text>", "why (recorded in the audit ledger)")
      .option("--no-wait", "start the revocation and print its id without following it")
      .option("--max-wait <duration>", "stop following after this long (exit 3)", "10m")
      .option("--interval <duration>", "how often to poll the progress", "250ms")
      .option("--json", "print the final progress as JSON"),
  ).action(
    action(async (f: RevokeFlags) => {
      const selector = selectorOf(f);
      const maxWaitMs = duration(f.maxWait, "--max-wait");
      const intervalMs = Math.max(50, duration(f.interval, "--interval"));
      const client = clientFrom(f);
      const started = Date.now();
      const op = await client.startRevocation(selector, f.reason);
      const what = Object.entries(selector).map(([k, v]) => `${k} ${visible(v)}`)[0]!;
      if (op.matched === 0) {
        if (f.json) process.stdout.write(`${JSON.stringify(op)}\n`);
        const none = "lease_id" in selector ? `lease ${visible(selector.lease_id)} is not live (unknown, or already ended)` : `no live lease of ${what}`;
        throw new CliError(`nothing_matched: ${none}; nothing was revoked`, 1);
      }
      if (!f.wait) {
        if (f.json) process.stdout.write(`${JSON.stringify(op)}\n`);
        else print(`revocation ${visible(op.id)} started: ${plural(op.matched, "live lease")} of ${what}\n`);
        return;
      }
      printErr(`revocation ${visible(op.id)} started: ${plural(op.matched, "live lease")} of ${what}\n`);
      const { progress, finished } = await follow(client, op.id, op.matched, { intervalMs, maxWaitMs });
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      let failedLeases: Lease[] = [];
      if (progress.failed > 0) {
        const filter = failedFilter(selector);
        if (filter) for await (const l of client.leases(filter, { max: 20 })) failedLeases.push(l);
        else failedLeases = [await client.getLease((selector as { lease_id: string }).lease_id)].filter((l) => l.state === "revoke_failed");
      }
      if (f.json) {
        process.stdout.write(`${JSON.stringify({ ...progress, failed_leases: failedLeases.map((l) => ({ id: l.id, workload: l.workload, role: l.role, attempts: l.revoke_attempts ?? 0, last_error: l.last_error ?? null })) }, null, 2)}\n`);
      } else {
        print(
          `revocation ${visible(progress.id)} ${finished ? visible(progress.state) : "still running"}: ${progress.matched} matched, ${progress.revoked} revoked, ${progress.failed} failed (${secs} s)\n`,
        );
        if (failedLeases.length > 0) {
          print(`failed (the worker keeps retrying them):\n`);
          for (const l of visibleDeep(failedLeases)) print(`  ${l.id}  ${l.workload}  ${l.role}  after ${plural(l.revoke_attempts ?? 0, "attempt")}: ${l.last_error ?? "unknown error"}\n`);
          if (progress.failed > failedLeases.length) print(`  ... and ${progress.failed - failedLeases.length} more: jitbroker leases --state revoke_failed\n`);
        }
      }
      if (!finished) throw new CliError(`revocation ${progress.id} is still running after ${f.maxWait}; follow it with GET /v1/admin/revocations/${progress.id}`, 3);
      if (progress.failed > 0) throw new CliError(`${plural(progress.failed, "lease")} could not be revoked yet (backend errors above)`, 1);
    }),
  );

  withClientFlags(
    program
      .command("history")
      .description("who requested a lease, with which identity, under which policy, and how it ended (operators)")
      .argument("<lease_id>", "the lease")
      .option("--json", "print the broker's answer as JSON"),
  ).action(
    action(async (leaseId: string, f: ClientFlags & { json?: boolean }) => {
      const h = await clientFrom(f).leaseHistory(leaseId);
      if (f.json) process.stdout.write(`${JSON.stringify(h, null, 2)}\n`);
      else print(describeHistory(h));
    }),
  );

  withClientFlags(program.command("whoami").description("the workload the token maps to, and the identity it was read from").option("--json", "print JSON")).action(
    action(async (f: ClientFlags & { json?: boolean }) => {
      const answer = await clientFrom(f).whoami();
      if (f.json) {
        process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
        return;
      }
      const w = visibleDeep(answer);
      print(
        `workload ${w.workload.id} (${w.workload.kind}, owner ${w.workload.owner}): ${w.workload.purpose}\n` +
          `identity: ${w.identity.kind} token from issuer ${w.identity.issuer}, subject ${w.identity.subject}, expires ${w.identity.expires_at}\n`,
      );
    }),
  );
}
