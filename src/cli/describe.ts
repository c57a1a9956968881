import { describeRedis, redactRedisUrl } from "../redis/connect";
import path from "node:path";
import type { LoadedConfig } from "../config/load";
import { formatDuration } from "../core/duration";

/** A table the eye can scan: pads each column to its widest cell. */
function table(rows: string[][]): string {
  const widths = rows.reduce<number[]>((w, r) => r.map((c, i) => Math.max(w[i] ?? 0, c.length)), []);
  return rows.map((r) => `  ${r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ")}`.trimEnd()).join("\n");
}

/** What `config check` prints; `warnings` (policy/lint.ts, one line each) are listed last. */
export function describeConfig(cfg: LoadedConfig, warnings: string[] = []): string {
  const rel = (p: string) => path.relative(process.cwd(), p) || p;
  const issuers = cfg.identity.issuers.map((i) =>
    i.type === "oidc"
      ? [i.name, "oidc", i.issuer, i.discovery ? "discovery" : i.jwks_uri ? `jwks_uri ${i.jwks_uri}` : `jwks_file ${rel(i.jwks_file!)}`, i.algorithms.join(",")]
      : [i.name, "spiffe", `spiffe://${i.trust_domain}`, i.bundle_file ? `bundle_file ${rel(i.bundle_file)}` : `bundle_url ${i.bundle_url!}`, i.algorithms.join(",")],
  );
  const workloads = cfg.workloads.map((w) => [
    w.id,
    w.kind,
    w.issuer,
    w.subject ?? "(any subject)",
    Object.entries(w.claims)
      .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join("|") : String(v)}`)
      .join(" "),
    w.owner,
  ]);
  const roles = cfg.roles.map((r) => [
    r.name,
    r.backend,
    `ttl ${formatDuration(r.ttl.default)} (max ${formatDuration(r.ttl.max)})`,
    Object.entries(r.labels)
      .map(([k, v]) => `${k}=${v}`)
      .join(" "),
  ]);
  return [
    `${rel(cfg.file)}: OK`,
    `redis: ${cfg.redis.url === "embedded" ? `embedded (data in ${rel(cfg.redis.data_dir)})` : describeRedis({ ...cfg.redis, url: cfg.redis.url && redactRedisUrl(cfg.redis.url) })}, prefix ${cfg.redis.prefix}${cfg.redis.durability.replicas > 0 ? `, durability ${cfg.redis.durability.replicas} replica(s) within ${formatDuration(cfg.redis.durability.timeout)}` : ""}`,
    `server: listen ${cfg.server.listen.text}, public_url ${cfg.server.public_url}, audience ${cfg.server.audience}`,
    `issuers (${issuers.length}):`,
    table(issuers),
    `workloads (${workloads.length}):`,
    workloads.length ? table(workloads) : "  (none)",
    `roles (${roles.length}):`,
    roles.length ? table(roles) : "  (none)",
    ...(cfg.backends.vault ? [`vault: ${describeVault(cfg.backends.vault)}`] : []),
    ...(cfg.console
      ? [
          `console: ${cfg.server.public_url.replace(/\/+$/, "")}/console/, sign-in at issuer ${cfg.console.oidc.issuer} as client ${cfg.console.oidc.client_id} (${cfg.console.oidc.client_secret ? "confidential" : "public, PKCE only"}), sessions idle ${formatDuration(cfg.console.session_idle)} / max ${formatDuration(cfg.console.session_max)}`,
        ]
      : []),
    ...(warnings.length ? [`warnings (${warnings.length}):`, ...warnings.map((w) => `  ${w}`)] : []),
    "",
  ].join("\n");
}

/** The vault backend in one line: where, as whom, from which files. Never a token or secret id. */
function describeVault(v: NonNullable<LoadedConfig["backends"]["vault"]>): string {
  const a = v.auth;
  const how =
    a.method === "token"
      ? a.token_file
        ? `token from ${a.token_file}`
        : "token (inline)"
      : a.method === "approle"
        ? `approle at auth/${a.mount} (role_id ${a.role_id}, secret_id ${a.secret_id_file ? `from ${a.secret_id_file}` : "inline"})`
        : `${a.method} at auth/${a.mount} (role ${a.role}, JWT from ${a.jwt_file})`;
  const tls = v.tls?.insecure_skip_verify ? ", TLS verification OFF" : v.tls?.ca_file ? `, CA ${v.tls.ca_file}` : "";
  return `${v.address}${v.namespace ? `, namespace ${v.namespace}` : ""}, auth ${how}${tls}`;
}
