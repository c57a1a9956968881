/**
 * The vault backend's configuration (docs/ARCHITECTURE.md, How to add a config section): the
 * role section `roles[].vault` and the backend section `backends.vault`, with the defaults of
 * its optional durations. src/config/schema.ts composes them into the file's schema.
 */
import { z } from "zod";
import { duration, durationOrOff, evenIfInvalid, LOOPBACK, parseUrl } from "../../core/schema";

/** Defaults of the optional `backends.vault` durations (ms), applied by `vaultTimings` (./client.ts). */
export const VAULT_DEFAULTS = { request_timeout: 10_000, health_check_interval: 30_000, reconcile_interval: 300_000, reconcile_grace: 120_000 };

const VAULT_SEGMENT = "[A-Za-z0-9_.@-]+";
const VAULT_NAME = /^[A-Za-z0-9_.-]{1,128}$/;
/** No `.` or `..` segment: URL normalisation would turn it into another Vault endpoint. */
const noDotSegments = (p: string) => !p.split("/").some((seg) => seg === "." || seg === "..");
/** A Vault API path below /v1: segments of safe characters, no leading or trailing slash, no empty, `.` or `..` segment. */
const vaultPath = (example: string) =>
  z
    .string()
    .regex(new RegExp(`^${VAULT_SEGMENT}(/${VAULT_SEGMENT})*$`), `must be a Vault path such as ${example} (no leading or trailing /, no v1/ prefix)`)
    .refine(noDotSegments, "must not contain . or .. segments");

export const vaultRole = z
  .strictObject({
    /** A dynamic-secret endpoint that answers with a lease (database/creds/<role>, aws/creds/<role>...). */
    path: vaultPath("database/creds/payments-ro").optional(),
    /**
     * How the lease TTL reaches Vault for a `path` role: true = POST {ttl} (aws/creds), false = GET
     * without a TTL (database/creds, rabbitmq/creds: the engine's role TTL applies and the broker
     * relies on revocation), absent = POST {ttl}, falling back to GET when the engine answers 405.
     */
    ttl_param: z.boolean().optional(),
    /** A token role: a child token is created at auth/token/create/<token_role>. */
    token_role: z
      .string()
      .regex(VAULT_NAME, "must be a Vault token role name (1-128 of [A-Za-z0-9_.-])")
      .refine((n) => n !== "." && n !== "..", 'must not be "." or ".." (auth/token/create/. is auth/token/create/, a child of the broker\'s own token)')
      .optional(),
    policies: z.array(z.string().regex(VAULT_NAME, "must be a Vault policy name (1-128 of [A-Za-z0-9_.-])")).min(1).optional(),
  })
  .superRefine((v, ctx) => {
    if ((v.path === undefined) === (v.token_role === undefined)) {
      ctx.addIssue({ code: "custom", message: "set exactly one of path (a dynamic secret) or token_role (a child token)" });
    }
    if (v.path !== undefined && v.policies !== undefined) ctx.addIssue({ code: "custom", path: ["policies"], message: "policies apply to token_role only" });
    if (v.token_role !== undefined && v.ttl_param !== undefined) ctx.addIssue({ code: "custom", path: ["ttl_param"], message: "ttl_param applies to path only" });
  }, evenIfInvalid);

const vaultMount = (dflt: string) =>
  z
    .string()
    .regex(new RegExp(`^${VAULT_SEGMENT}(/${VAULT_SEGMENT})*$`), `must be an auth mount path such as ${dflt} (no leading or trailing /)`)
    .refine(noDotSegments, "must not contain . or .. segments")
    .default(dflt);

/** Exactly one of two alternative fields (`secret_id` or `secret_id_file`...). Names fields, never values. */
const oneOf = (a: string, b: string) => (v: Record<string, unknown>, ctx: z.RefinementCtx) => {
  if ((v[a] === undefined) === (v[b] === undefined)) ctx.addIssue({ code: "custom", message: `set exactly one of ${a} or ${b}` });
};

const vaultAuth = z.discriminatedUnion(
  "method",
  [
    // An empty token (an unset ${VAR}, reported by the loader) is refused at login.
    z.strictObject({ method: z.literal("token"), token: z.string().optional(), token_file: z.string().min(1).optional() }).superRefine(oneOf("token", "token_file")),
    z
      .strictObject({
        method: z.literal("approle"),
        mount: vaultMount("approle"),
        role_id: z.string().min(1),
        secret_id: z.string().optional(), // empty (an unset ${VAR}): refused at login
        /** Read at every login, so a rotated secret id is picked up. */
        secret_id_file: z.string().min(1).optional(),
      })
      .superRefine(oneOf("secret_id", "secret_id_file")),
    /** The JWT is read from the file at every login (a projected token that rotates). */
    z.strictObject({ method: z.literal("jwt"), mount: vaultMount("jwt"), role: z.string().min(1), jwt_file: z.string().min(1) }),
    z.strictObject({
      method: z.literal("kubernetes"),
      mount: vaultMount("kubernetes"),
      role: z.string().min(1),
      jwt_file: z.string().min(1).default("/var/run/secrets/kubernetes.io/serviceaccount/token"),
    }),
  ],
  { error: "method must be one of token, approle, jwt, kubernetes" },
);


/**
 * Vault's address: https (http only for localhost), the server only (no /v1 path, query or
 * fragment), no credentials. A message never echoes an address holding credentials.
 */
const vaultAddress = z.string().superRefine((text, ctx) => {
  // The message never echoes the text: an address may hold credentials.
  const url = parseUrl(text, ctx, "is not a URL (expected the server address, such as https://vault.example.com:8200)");
  if (url === null) return;
  if (url.username !== "" || url.password !== "") {
    ctx.addIssue({ code: "custom", message: "must not contain credentials (user:password@): the broker authenticates with backends.vault.auth" });
    return;
  }
  if (!(url.protocol === "https:" || (url.protocol === "http:" && LOOPBACK.has(url.hostname)))) {
    ctx.addIssue({ code: "custom", message: `must be an https URL (http only for localhost), got "${text}"` });
    return;
  }
  if (url.pathname !== "/" || /[?#]/.test(text)) ctx.addIssue({ code: "custom", message: "must be the server address only, such as https://vault.example.com:8200 (no /v1 path)" });
});

export const vaultBackend = z
  .strictObject({
    address: vaultAddress,
    /** Vault Enterprise namespace, sent as X-Vault-Namespace on every request. */
    namespace: z
      .string()
      .regex(new RegExp(`^${VAULT_SEGMENT}(/${VAULT_SEGMENT})*/?$`), "must be a namespace path such as team-a or org/team-a")
      .refine((n) => noDotSegments(n.replace(/\/$/, "")), "must not contain . or .. segments")
      .optional(),
    auth: vaultAuth,
    tls: z
      .strictObject({
        /** PEM bundle of the CA(s) that sign Vault's certificate (else the system CAs). */
        ca_file: z.string().min(1).optional(),
        /** TLS server name (SNI and certificate check) when it differs from the address's host. */
        server_name: z.string().min(1).optional(),
        /** Turns certificate verification off. Never in production; must be set explicitly. */
        insecure_skip_verify: z.boolean().default(false),
      })
      .optional(),
    // Defaults: VAULT_DEFAULTS above.
    request_timeout: duration.optional(),
    /** How often Vault's health is probed (a sealed Vault is shown in /readyz); 0 disables. */
    health_check_interval: durationOrOff.optional(),
    /** How often Vault leases under the path roles are compared with the broker's (worker only); 0 disables. */
    reconcile_interval: durationOrOff.optional(),
    /** A Vault lease younger than this is never taken for an orphan (at least worker.mint_timeout is used). */
    reconcile_grace: duration.optional(),
  })
  .superRefine((v, ctx) => {
    if (v.tls === undefined) return;
    if (typeof v.address === "string" && v.address.startsWith("http:")) {
      ctx.addIssue({ code: "custom", path: ["tls"], message: "tls applies to an https address only" });
    }
    if (v.tls.insecure_skip_verify && (v.tls.ca_file !== undefined || v.tls.server_name !== undefined)) {
      ctx.addIssue({ code: "custom", path: ["tls", "insecure_skip_verify"], message: "insecure_skip_verify: true ignores ca_file and server_name; remove them or verify the certificate" });
    }
  }, evenIfInvalid);
