/**
 * Operator commands for approvals: `requests` (the queue, or any state), `approve ID` and
 * `deny ID`, each with an optional `--reason` recorded in the audit ledger.
 */
import { Command, Option } from "commander";
import type { ApprovalRequest, ApprovalState } from "../../client/types";
import { APPROVAL_STATES } from "../../approvals/store";
import { CliError } from "../errors";
import { print, visibleDeep } from "../text";
import { action, clientFrom, withClientFlags, type ClientFlags } from "./common";
import { table } from "./operators";

const STATES: readonly ApprovalState[] = APPROVAL_STATES;
const REQUEST_ID = /^rq_[A-Za-z0-9_-]{16}$/;

export function requestRows(requests: ApprovalRequest[]): string {
  return table(
    ["REQUEST", "STATE", "WORKLOAD", "ROLE", "TASK", "INTENT", "CREATED", "DECIDED"],
    requests.map((r) => [r.id, r.state, r.workload, r.role, r.task_id, r.task.intent, r.created_at, r.decided_by ? `${r.decided_by} ${r.decided_at ?? ""}`.trim() : ""]),
  );
}

/** One line saying what happened to a request. */
export function describeRequest(answer: ApprovalRequest): string {
  const r = visibleDeep(answer);
  const what = `request ${r.id} (${r.workload} → ${r.role}, task ${r.task_id})`;
  switch (r.state) {
    case "approved":
      return `${what} approved by ${r.decided_by}; the requester collects the credential by ${r.collect_by}\n`;
    case "denied":
      return `${what} denied by ${r.decided_by}${r.reason ? `: ${r.reason}` : ""}\n`;
    default:
      return `${what} is ${r.state}\n`;
  }
}

export function registerApprovalCommands(program: Command): void {
  withClientFlags(
    program
      .command("requests")
      .description("list credential requests waiting for (or decided by) an operator")
      .addOption(new Option("--state <state>", "only requests in this state").choices(STATES).default("pending_approval"))
      .option("--all", "every state, not only pending requests")
      .option("--workload <id>", "only this workload's requests")
      .option("--json", "print a JSON array of requests"),
  ).action(
    action(async (f: ClientFlags & { state: ApprovalState; all?: boolean; workload?: string; json?: boolean }) => {
      const client = clientFrom(f);
      const requests: ApprovalRequest[] = [];
      let cursor: string | undefined;
      do {
        const page = await client.listRequests({ ...(f.all ? {} : { state: f.state }), ...(f.workload ? { workload: f.workload } : {}), limit: 500, ...(cursor ? { cursor } : {}) });
        requests.push(...page.requests);
        cursor = page.next_cursor ?? undefined;
      } while (cursor && requests.length < 10_000);
      if (f.json) process.stdout.write(`${JSON.stringify(requests, null, 2)}\n`);
      else if (requests.length === 0) print(f.all ? "no requests\n" : `no requests in state ${f.state}\n`);
      else print(requestRows(requests));
    }),
  );

  for (const verb of ["approve", "deny"] as const) {
    withClientFlags(
      program
        .command(`${verb} <request-id>`)
        .description(verb === "approve" ? "approve a pending credential request (the requester then collects it)" : "deny a pending credential request")
        .option("--reason <text>", "why (recorded in the audit ledger)")
        .option("--json", "print the request as JSON"),
    ).action(
      action(async (id: string, f: ClientFlags & { reason?: string; json?: boolean }) => {
        if (!REQUEST_ID.test(id)) throw new CliError(`${JSON.stringify(id)} is not a request id (rq_ followed by 16 characters)`, 2);
        const client = clientFrom(f);
        const r = verb === "approve" ? await client.approveRequest(id, f.reason) : await client.denyRequest(id, f.reason);
        if (f.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        else print(describeRequest(r));
      }),
    );
  }
}
