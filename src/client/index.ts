/**
 * `jitbroker/client`: a typed client of the jitbroker REST API for agents, CI jobs and
 * operators. Node 20's global fetch, no other dependency.
 *
 *   import { BrokerClient } from "jitbroker/client";
 *   const broker = new BrokerClient({ url: "https://jitbroker.internal", token: { file: "/var/run/secrets/tokens/jitbroker" } });
 *   await broker.withTask("ticket-42", async (task) => {
 *     const { credential } = await task.requestCredential("orders-read");
 *     ...
 *   }); // the task is completed (its leases revoked) even if the function throws
 */
export { BrokerClient } from "./client";
export type { BrokerClientOptions, CredentialRequestOptions, RetryOptions, TaskScope, WaitForApproval } from "./client";
export { ApprovalError, BrokerApiError, BrokerClientError, BrokerUnreachableError, CredentialRejectedError, TokenSourceError } from "./errors";
export { createCredentialVerifier, verifyCredential } from "./verify";
export type { CredentialVerifier, VerifiedCredential, VerifyOptions } from "./verify";
export type { Problem } from "./errors";
export { envToken, fileToken, githubActionsToken, tokenProvider } from "./token";
export type { GitHubActionsTokenOptions, TokenOption, TokenProvider } from "./token";
export type * from "./types";
