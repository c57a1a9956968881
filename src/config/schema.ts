/**
 * The configuration file's schema (docs/ARCHITECTURE.md, How to add a config section; the file's format is a public contract): every field, its default,
 * and every cross-reference check. Parsing turns durations into milliseconds; paths are left
 * as written and resolved by `load.ts` against the file's directory.
 */
import { z } from "zod";
import { checkTimeZone } from "../core/time";
import { duration, evenIfInvalid, httpsUrl, isObject, parseUrl } from "../core/schema";
import { formatPath } from "./path";
import { awsStsBackend, awsStsRole } from "../backends/aws/config";
import { jwtBackend, jwtRole } from "../backends/jwt/config";
import { vaultBackend, vaultRole } from "../backends/vault/config";
import { MAX_SHARDS } from "../redis/keys";

const ASYMMETRIC_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"] as const;
const SVID_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"] as const;

const algList = (allowed: readonly string[], dflt: string[]) =>
  z
    .array(z.string())
    .min(1)
    .default(dflt)
    .superRefine((algs, ctx) => {
      algs.forEach((alg, i) => {
        if (!allowed.includes(alg)) {
          ctx.addIssue({
            code: "custom",
            path: [i],
            message: `algorithm "${alg}" is not allowed (allowed: ${allowed.join(", ")}; never none or HMAC)`,
          });
        }
      });
    });

const issuerCommon = {
  name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, "must be 1-63 of [a-z0-9_-], starting with a letter or digit"),
  clock_skew: duration.prefault("30s"),
  max_token_lifetime: duration.prefault("1h"),
  single_use: z.boolean().default(false),
  /** How often a key set is re-read even when every kid is known. */
  jwks_refresh: duration.prefault("10m"),
  /** Minimum time between two refreshes caused by unknown kids. */
  jwks_cooldown: duration.prefault("30s"),
  /**
   * `workloads` (default): tokens authenticate workloads. `users`: ID tokens of people an agent
   * acts for (`POST /v1/oauth/token`, on-behalf-of); never accepted as a workload token.
   */
  use: z.enum(["workloads", "users"]).default("workloads"),
  /**
   * The `aud` a token must carry (default `server.audience`). For a `users` issuer this is
   * usually the OIDC client id the people's ID tokens are issued to.
   */
  audience: z.string().min(1).optional(),
};

const oidcIssuer = z
  .strictObject({
    ...issuerCommon,
    type: z.literal("oidc"),
    issuer: httpsUrl,
    discovery: z.boolean().optional(),
    jwks_uri: httpsUrl.optional(),
    jwks_file: z.string().min(1).optional(),
    algorithms: algList(ASYMMETRIC_ALGS, ["RS256"]),
  })
  .superRefine((iss, ctx) => {
    const sources = [iss.discovery === true, iss.jwks_uri !== undefined, iss.jwks_file !== undefined].filter(Boolean).length;
    if (sources !== 1) {
      ctx.addIssue({ code: "custom", message: "set exactly one of discovery: true, jwks_uri or jwks_file" });
    }
  }, evenIfInvalid);

const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;

const spiffeIssuer = z
  .strictObject({
    ...issuerCommon,
    type: z.literal("spiffe"),
    trust_domain: z.string().regex(TRUST_DOMAIN, "must be a SPIFFE trust domain name (lowercase letters, digits, . _ -)"),
    bundle_file: z.string().min(1).optional(),
    bundle_url: httpsUrl.optional(),
    algorithms: algList(SVID_ALGS, ["RS256", "ES256"]),
  })
  .superRefine((iss, ctx) => {
    if ((iss.bundle_file === undefined) === (iss.bundle_url === undefined)) {
      ctx.addIssue({ code: "custom", message: "set exactly one of bundle_file or bundle_url" });
    }
  }, evenIfInvalid);

const issuer = z.discriminatedUnion("type", [oidcIssuer, spiffeIssuer]);

// ---- Audit sinks (src/audit/sinks) ----

/** A size such as 100MB, 512KB, 1GB or a number of bytes. */
const byteSize = z.union([z.number().int().positive(), z.string()]).transform((v, ctx) => {
  if (typeof v === "number") return v;
  const m = /^(\d+)\s*(B|KB|MB|GB)?$/i.exec(v.trim());
  if (!m) {
    ctx.addIssue({ code: "custom", message: `"${v}" is not a size such as 100MB, 512KB or 1GB` });
    return z.NEVER;
  }
  const unit = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 }[(m[2] ?? "B").toUpperCase() as "B"];
  return Number(m[1]) * unit;
});
const sinkName = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, "must be 1-63 of [a-z0-9_-]").optional();
const fileSink = z.strictObject({
  type: z.literal("file"),
  name: sinkName,
  path: z.string().min(1),
  max_size: byteSize.default(100 * 1024 ** 2),
  keep: z.number().int().min(1).max(1000).default(10),
  batch_size: z.number().int().min(1).max(10000).default(500),
});
const httpSink = z.strictObject({
  type: z.literal("http"),
  name: sinkName,
  url: httpsUrl,
  format: z.enum(["json", "ocsf"]).default("json"),
  headers: z.record(z.string().regex(/^[A-Za-z0-9-]{1,64}$/, "must be an HTTP header name"), z.string()).default({}),
  batch_size: z.number().int().min(1).max(10000).default(200),
  timeout: duration.prefault("10s"),
});
const syslogSink = z.strictObject({
  type: z.literal("syslog"),
  name: sinkName,
  address: z.string().regex(/^(udp|tcp|tls):\/\/[^/\s]+:\d{1,5}$/, "must be udp://host:port, tcp://host:port or tls://host:port"),
  /** RFC 5424 facility (default 13, log audit). */
  facility: z.number().int().min(0).max(23).default(13),
  app_name: z.string().regex(/^[!-~]{1,48}$/).default("jitbroker"),
  /** tls:// only: CA bundle to trust instead of the system's. */
  ca_file: z.string().min(1).optional(),
  batch_size: z.number().int().min(1).max(10000).default(200),
});
const auditSink = z.discriminatedUnion("type", [fileSink, httpSink, syslogSink]);
export type AuditSinkConfig = z.output<typeof auditSink>;

const claimValue = z.union([z.string(), z.number(), z.boolean()]);

const ID = /^[A-Za-z0-9._:@-]{1,128}$/;

const workload = z.strictObject({
  id: z.string().regex(ID, "must be 1-128 of [A-Za-z0-9._:@-]"),
  kind: z.enum(["ci", "agent", "service", "human"]),
  owner: z.string().min(1),
  purpose: z.string().min(1),
  issuer: z.string().min(1),
  subject: z.string().min(1).optional(),
  claims: z.record(z.string().min(1), z.union([claimValue, z.array(claimValue).min(1)])).default({}),
  /** Per-workload overrides of `limits.requests_per_minute` and `leases.quota_per_workload`. */
  limits: z
    .strictObject({
      requests_per_minute: z.number().int().min(0).optional(),
      active_leases: z.number().int().min(0).optional(),
    })
    .optional(),
});

const roleTtl = z
  .strictObject({ default: duration, max: duration })
  .refine((t) => t.default <= t.max, { message: "default must not exceed max" });

const role = z
  .strictObject({
    name: z.string().regex(ID, "must be 1-128 of [A-Za-z0-9._:@-]"),
    backend: z.enum(["jwt", "vault", "aws_sts"]),
    ttl: roleTtl,
    labels: z.record(z.string().min(1), z.string()).default({}),
    description: z.string().optional(),
    jwt: jwtRole.optional(),
    vault: vaultRole.optional(),
    aws_sts: awsStsRole.optional(),
  })
  .superRefine((r, ctx) => {
    for (const kind of ["jwt", "vault", "aws_sts"] as const) {
      if (r.backend === kind && r[kind] === undefined) {
        ctx.addIssue({ code: "custom", path: [kind], message: `backend ${kind} needs a "${kind}" section` });
      }
      if (r.backend !== kind && r[kind] !== undefined) {
        ctx.addIssue({ code: "custom", path: [kind], message: `"${kind}" section given but backend is ${r.backend}` });
      }
    }
    if (r.backend === "aws_sts" && isObject(r.ttl) && typeof r.ttl.max === "number" && r.ttl.max > 12 * 3600_000) {
      ctx.addIssue({ code: "custom", path: ["ttl", "max"], message: "aws_sts sessions last at most 12h (STS DurationSeconds maximum)" });
    }
  }, evenIfInvalid);

export const listenSchema = z.string().transform((text, ctx) => {
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) {
    ctx.addIssue({ code: "custom", message: `"${text}" is not host:port` });
    return z.NEVER;
  }
  return { host: m[1]!.replace(/^\[|\]$/g, ""), port, text };
});

export const redisUrlSchema = z
  .string()
  .refine((u) => u === "embedded" || /^rediss?:\/\/[^\s]+$/.test(u), "must be embedded, redis://... or rediss://...");

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "must be host:port");
/** TLS towards Redis: `true` (system CAs) or the CA file and server name to check. */
const redisTls = z.union([
  z.boolean(),
  z.strictObject({ ca_file: z.string().min(1).optional(), servername: z.string().min(1).optional() }),
]);
const redisSentinel = z.strictObject({
  /** The name the sentinels monitor the primary under. */
  master: z.string().min(1),
  nodes: z.array(hostPort).min(1, "at least one sentinel host:port"),
  username: z.string().min(1).optional(),
  password: z.string().min(1).optional(),
  sentinel_password: z.string().min(1).optional(),
  tls: redisTls.optional(),
});
const redisCluster = z.strictObject({
  /** Seed nodes; the client learns the rest of the cluster from them. */
  nodes: z.array(hostPort).min(1, "at least one cluster node host:port"),
  username: z.string().min(1).optional(),
  password: z.string().min(1).optional(),
  tls: redisTls.optional(),
});

export const configSchema = z
  .strictObject({
    server: z
      .strictObject({
        listen: listenSchema.default({ host: "127.0.0.1", port: 8080, text: "127.0.0.1:8080" }),
        public_url: httpsUrl,
        audience: z.string().min(1).default("jitbroker"),
        body_limit: z.string().regex(/^\d+(b|kb)$/i).default("16kb"),
        trust_proxy: z.union([z.boolean(), z.string(), z.number()]).default(false),
        shutdown_grace: duration.prefault("10s"),
      }),
    redis: z
      .strictObject({
        /** Single node (`embedded` included). Exactly one of url / sentinel / cluster; none means `embedded`. */
        url: redisUrlSchema.optional(),
        sentinel: redisSentinel.optional(),
        cluster: redisCluster.optional(),
        prefix: z.string().regex(/^[A-Za-z0-9_-]{1,32}$/, "must be 1-32 of [A-Za-z0-9_-]").default("jit"),
        data_dir: z.string().default(".jitbroker/redis"),
        /** `redis.url: embedded` only: the embedded redis-server's maxmemory (with noeviction), so
         * that store_full protects revocation there too (default 512mb; Redis's size syntax). */
        embedded_maxmemory: z.string().regex(/^[1-9]\d{0,5}(kb|mb|gb)$/i, 'must be a size like "512mb" or "2gb"').optional(),
        /** Workloads spread over this many hash tags (src/redis/keys.ts); fixed once data exists. */
        shards: z.number().int("must be a whole number").min(1, "must be at least 1").max(MAX_SHARDS, `must be at most ${MAX_SHARDS}`).default(1),
        /** I1: WAIT for this many replicas before a credential is answered. */
        durability: z
          .strictObject({
            replicas: z.number().int().min(0).max(16).default(0),
            timeout: duration.prefault("1s"),
          })
          .prefault({}),
        /** Above this share of Redis's maxmemory new issuance is refused (503 store_full); default 0.9. */
        max_memory_use: z
          .union([z.number().gt(0).max(1), z.string().regex(/^\d{1,3}(\.\d+)?%$/, 'must be a share like 0.9 or "90%"')])
          .transform((v) => (typeof v === "number" ? v : Number(v.slice(0, -1)) / 100))
          .refine((v) => v > 0 && v <= 1, "must be more than 0 and at most 1 (100%)")
          .optional(),
      })
      .superRefine((r, ctx) => {
        const modes = (["url", "sentinel", "cluster"] as const).filter((m) => r[m] !== undefined);
        if (modes.length > 1) {
          for (const m of modes.slice(1)) ctx.addIssue({ code: "custom", path: [m], message: `use exactly one of redis.url, redis.sentinel, redis.cluster (also set: redis.${modes[0]})` });
        }
        if ((r.url ?? (r.sentinel || r.cluster ? "" : "embedded")) === "embedded" && (r.durability?.replicas ?? 0) > 0) {
          ctx.addIssue({ code: "custom", path: ["durability", "replicas"], message: "an embedded Redis has no replicas; use 0, or point redis.url/sentinel/cluster at a Redis with replicas" });
        }
      }, evenIfInvalid)
      .transform((r) => ({ ...r, url: r.url ?? (r.sentinel || r.cluster ? undefined : "embedded") }))
      .prefault({}),
    identity: z.strictObject({
      issuers: z.array(issuer).min(1),
      /**
       * Verified workload tokens kept in memory, by SHA-256 of the token, so a token presented
       * again is not verified again (src/identity/token-cache.ts). 0 turns the cache off.
       */
      token_cache: z.strictObject({ max_entries: z.number().int().min(0).max(1_000_000).default(10_000) }).prefault({}),
    }),
    workloads: z.array(workload).default([]),
    roles: z.array(role).default([]),
    backends: z
      .strictObject({
        jwt: jwtBackend.prefault({}),
        vault: vaultBackend.optional(),
        aws_sts: awsStsBackend.optional(),
      })
      .prefault({}),
    leases: z
      .strictObject({
        /** Active leases one workload may hold at once (0 = unlimited). */
        quota_per_workload: z.number().int().min(0).default(100),
        /** How long a terminal lease and its history stay queryable. */
        retention: duration.prefault("7d"),
        /** How long a completed task stays completed (I5 holds for this long). */
        task_retention: duration.prefault("30d"),
      })
      .prefault({}),
    worker: z
      .strictObject({
        /** `serve --only worker` listens here for /healthz, /readyz and /metrics (no API); absent: no listener. */
        listen: listenSchema.optional(),
        concurrency: z.number().int().min(1).max(1000).default(50),
        /** How often the worker walks the expiry schedule ({p}:leases:due) for expired leases. */
        expiry_poll_interval: duration.prefault("20ms"),
        sweep_interval: duration.prefault("250ms"),
        /** How late a due lease may be before the sweeper takes it over from BullMQ. */
        sweep_grace: duration.prefault("250ms"),
        /** Failed attempts after which a lease shows revoke_failed (it is still retried). */
        fail_after: z.number().int().min(1).default(5),
        mint_timeout: duration.prefault("30s"),
        backend_concurrency: z.number().int().min(1).max(1000).default(20),
      })
      .prefault({}),
    /** Human approval of requests whose permit says @approval("required"). */
    approvals: z
      .strictObject({
        /** How long a request waits for an operator before it expires. */
        pending_timeout: duration.prefault("1h"),
        /** How long an approved request may wait to be collected (the credential is minted then). */
        collect_timeout: duration.prefault("15m"),
        /** Pending requests one workload may have at once (0 = unlimited). */
        max_pending_per_workload: z.number().int().min(0).default(20),
      })
      .prefault({}),
    /** Per-workload rate limit of credential requests, shared by all replicas through Redis (0 = off). */
    limits: z.strictObject({ requests_per_minute: z.number().int().min(0).default(120) }).prefault({}),
    policy: z
      .strictObject({
        files: z.array(z.string().min(1)).min(1).default(["policies/*.cedar"]),
        /** IANA time zone of `context.time` (working-hours policies). */
        timezone: z
          .string()
          .default("UTC")
          .refine((tz) => {
            try {
              checkTimeZone(tz);
              return true;
            } catch {
              return false;
            }
          }, "must be an IANA time zone such as UTC or Europe/Berlin"),
      })
      .prefault({}),
    dev: z.strictObject({ issuer_key_file: z.string().min(1) }).optional(),
    /** The operators' console (docs/ARCHITECTURE.md, Console; src/console). Absent: no console is served. */
    console: z
      .strictObject({
        oidc: z.strictObject({
          /** Name of an `oidc` issuer of identity.issuers: where operators sign in. */
          issuer: z.string().min(1),
          client_id: z.string().min(1).max(256),
          /** Absent: a public client (PKCE alone, token_endpoint_auth_method none). */
          client_secret: z.string().min(1).max(1024).optional(),
        }),
        session_idle: duration.prefault("30m"),
        session_max: duration.prefault("8h"),
      })
      .optional(),
    /** RFC 8693 delegation (src/oauth): how many hops a chain may have (0 = no delegation). */
    delegation: z.strictObject({ max_depth: z.number().int().min(0).max(16).default(3) }).prefault({}),
    /** OpenTelemetry traces (src/telemetry): off without an endpoint. */
    telemetry: z
      .strictObject({
        /** OTLP/HTTP endpoint (traces go to <endpoint>/v1/traces). http is allowed: spans hold no secret. */
        otlp_endpoint: z
          .string()
          .superRefine((text, ctx) => {
            const url = parseUrl(text, ctx);
            if (url === null) return;
            if (url.protocol !== "http:" && url.protocol !== "https:") ctx.addIssue({ code: "custom", message: "must be an http or https URL" });
            else if (url.username || url.password) ctx.addIssue({ code: "custom", message: "must not carry credentials" });
            else if (url.search || url.hash) ctx.addIssue({ code: "custom", message: "must not have a query or fragment" });
          })
          .optional(),
        service_name: z.string().regex(/^[!-~]{1,128}$/, "must be 1-128 visible ASCII characters").default("jitbroker"),
      })
      .prefault({}),
    /** The audit ledger (src/audit): the chain's key and the sinks that take the events out of Redis. */
    audit: z
      .strictObject({
        /** MAC key of the chain, kept outside Redis (0600); created on first start; the same file on every replica. */
        key_file: z.string().min(1).default(".jitbroker/audit.key"),
        /**
         * Events leave Redis this long after they were written (checked every few seconds, so
         * within a minute), never before every sink confirmed them (src/audit/retention.ts).
         */
        retention: duration.prefault("30d").refine((ms) => ms >= 1000, "must be at least 1s"),
        /**
         * Hard bound (I9): events some sink has not confirmed yet. At this many, new issuance is
         * refused (503 audit_backlog_full) until the slowest sink has caught up below 90 % of it;
         * revocation, completion and operator actions go on. Sized in README, Audit operations.
         */
        max_backlog: z.number().int().min(1).default(1_000_000),
        sinks: z.array(auditSink).default([]),
      })
      .prefault({})
      .superRefine((a, ctx) => {
        const seen = new Set<string>();
        (Array.isArray(a.sinks) ? a.sinks : []).forEach((s, i) => {
          const name = s?.name ?? `${s?.type}-${i}`;
          if (seen.has(name)) ctx.addIssue({ code: "custom", path: ["sinks", i, "name"], message: `duplicate sink name "${name}"` });
          seen.add(name);
        });
      }, evenIfInvalid),
  })
  // Runs even when other parts are invalid (`evenIfInvalid`), so one `config check` reports every
  // problem at once; the value may then be partial, hence the type guards below.
  .superRefine((cfg, ctx) => {
    const dup = (entries: [unknown, (string | number)[]][], what: string) => {
      const seen = new Map<string, string>();
      for (const [value, path] of entries) {
        if (typeof value !== "string") continue;
        const first = seen.get(value);
        if (first !== undefined) ctx.addIssue({ code: "custom", path, message: `duplicate ${what} "${value}" (first at ${first})` });
        else seen.set(value, formatPath(path));
      }
    };
    const list = <T>(v: T[] | undefined): T[] => (Array.isArray(v) ? v : []).map((x) => (isObject(x) ? x : ({} as T)));
    const issuers = list(isObject(cfg.identity) ? cfg.identity.issuers : undefined);
    const workloads = list(cfg.workloads);
    const roles = list(cfg.roles);
    dup(issuers.map((iss, i) => [iss.name, ["identity", "issuers", i, "name"]]), "issuer name");
    dup(
      issuers.map((iss, i) =>
        iss.type === "oidc"
          ? [typeof iss.issuer === "string" ? `issuer URL ${iss.issuer}` : undefined, ["identity", "issuers", i, "issuer"]]
          : [iss.type === "spiffe" && typeof iss.trust_domain === "string" ? `trust domain ${iss.trust_domain}` : undefined, ["identity", "issuers", i, "trust_domain"]],
      ),
      "issuer",
    );
    dup(workloads.map((w, i) => [w.id, ["workloads", i, "id"]]), "workload id");
    issuers.forEach((iss, i) => {
      if (iss.type === "spiffe" && iss.use === "users") ctx.addIssue({ code: "custom", path: ["identity", "issuers", i, "use"], message: "use: users is for OIDC issuers of people's ID tokens, not SPIFFE" });
    });
    dup(roles.map((r, i) => [r.name, ["roles", i, "name"]]), "role name");

    const byName = new Map(issuers.filter((i) => typeof i.name === "string").map((i) => [i.name, i]));
    workloads.forEach((w, i) => {
      if (typeof w.issuer !== "string") return;
      const iss = byName.get(w.issuer);
      if (!iss) {
        ctx.addIssue({ code: "custom", path: ["workloads", i, "issuer"], message: `unknown issuer "${w.issuer}" (known: ${[...byName.keys()].join(", ")})` });
        return;
      }
      if (iss.use === "users") {
        ctx.addIssue({ code: "custom", path: ["workloads", i, "issuer"], message: `issuer "${w.issuer}" has use: users; its tokens identify people an agent acts for, never a workload` });
        return;
      }
      if (iss.type === "spiffe" && typeof w.subject === "string" && !w.subject.startsWith(`spiffe://${iss.trust_domain}/`)) {
        ctx.addIssue({
          code: "custom",
          path: ["workloads", i, "subject"],
          message: `must be a SPIFFE ID in trust domain ${iss.trust_domain} (spiffe://${iss.trust_domain}/...)`,
        });
      }
    });
    if (isObject(cfg.console) && isObject(cfg.console.oidc) && typeof cfg.console.oidc.issuer === "string") {
      const iss = byName.get(cfg.console.oidc.issuer);
      if (!iss) ctx.addIssue({ code: "custom", path: ["console", "oidc", "issuer"], message: `unknown issuer "${cfg.console.oidc.issuer}" (known: ${[...byName.keys()].join(", ")})` });
      else if (iss.type !== "oidc") ctx.addIssue({ code: "custom", path: ["console", "oidc", "issuer"], message: `issuer "${iss.name}" is ${iss.type}: operators sign in at an oidc issuer` });
    }
    roles.forEach((r, i) => {
      if ((r.backend === "vault" || r.backend === "aws_sts") && !(isObject(cfg.backends) && cfg.backends[r.backend] !== undefined)) {
        ctx.addIssue({ code: "custom", path: ["roles", i, "backend"], message: `backend ${r.backend} is used but backends.${r.backend} is not configured` });
      }
    });
  }, evenIfInvalid);

export type Config = z.output<typeof configSchema>;
export type IssuerConfig = Config["identity"]["issuers"][number];
export type OidcIssuerConfig = Extract<IssuerConfig, { type: "oidc" }>;
export type SpiffeIssuerConfig = Extract<IssuerConfig, { type: "spiffe" }>;
export type WorkloadConfig = Config["workloads"][number];
export type RoleConfig = Config["roles"][number];
export type RedisConfig = Config["redis"];
export type VaultBackendConfig = NonNullable<Config["backends"]["vault"]>;
