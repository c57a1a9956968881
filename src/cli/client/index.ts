/**
 * The client commands of `jitbroker` (docs/ARCHITECTURE.md, Feature folders): CI (`exchange`, `complete`) and
 * operators (`leases`, `revoke`, `history`, `whoami`, `requests`, `approve`, `deny`). They talk to a broker over its REST API
 * through `jitbroker/client`; `--broker URL` or JITBROKER_URL says where.
 */
import type { Command } from "commander";
import { registerApprovalCommands } from "./approvals";
import { registerExchangeCommands } from "./exchange";
import { registerOperatorCommands } from "./operators";

export function registerClientCommands(program: Command): void {
  registerExchangeCommands(program);
  registerOperatorCommands(program);
  registerApprovalCommands(program);
}
