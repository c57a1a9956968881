/**
 * RFC 7662 introspection of broker-issued JWTs (`POST /v1/introspect`). A token is active only
 * while its lease is active and unexpired and, for a delegated lease, while every ancestor lease
 * is too (a lease whose record in Redis is unreadable counts as not active: fail closed): a chain revoked at its root is inactive from the moment the root is triggered, before
 * the cascade (src/leases/revoker.ts) reaches each descendant. With `resource` (RFC 8707), a
 * token whose audience does not include it is inactive: a resource server asking about a token
 * bound to another resource learns nothing but `active: false`.
 *
 * The answer carries the chain: `sub` (the parent's subject, or the person), `act` (the actors,
 * outermost = current), `on_behalf_of` and `parent_lease_id`.
 */
import type { JwtBackend } from "../backends/jwt/backend";
import { readable, type LeaseStore } from "../leases/store";
import { Router } from "express";
import { BrokerError } from "../core/errors";
import { requireJsonObject } from "../http/app";
import { mount } from "../http/api";
import { TOKENS_API } from "./api";

export type Introspection = { active: false } | ({ active: true } & Record<string, unknown>);

export function createIntrospector(deps: { jwt: JwtBackend; store: LeaseStore; now?: () => number }) {
  const now = deps.now ?? Date.now;
  return async function introspect(token: string, resource?: string): Promise<Introspection> {
    const verified = await deps.jwt.verify(token);
    // An unreadable lease (a malformed record in Redis) is no lease: inactive, fail closed.
    const lease = verified ? readable(await deps.store.get(verified.leaseId)) : null;
    if (!verified || !lease || lease.state !== "active" || lease.expires_ms <= now()) return { active: false };
    const p = verified.payload;
    const aud = Array.isArray(p.aud) ? p.aud : typeof p.aud === "string" ? [p.aud] : [];
    if (resource !== undefined && !aud.includes(resource)) return { active: false };
    if (lease.delegation) {
      const ancestors = (await deps.store.getMany(lease.delegation.ancestors)).map(readable);
      if (ancestors.some((a) => !a || a.state !== "active" || a.expires_ms <= now())) return { active: false };
    }
    return {
      active: true,
      token_type: "Bearer",
      iss: p.iss,
      sub: p.sub,
      aud: p.aud,
      scope: p.scope,
      jti: p.jti,
      task_id: p.task_id,
      iat: p.iat,
      nbf: p.nbf,
      exp: p.exp,
      ...(p.act !== undefined ? { act: p.act } : {}),
      lease_id: lease.id,
      role: lease.role,
      workload: lease.workload,
      ...(lease.parent_lease_id ? { parent_lease_id: lease.parent_lease_id, depth: lease.delegation?.depth } : {}),
      ...(lease.on_behalf_of ? { on_behalf_of: lease.on_behalf_of } : {}),
    };
  };
}

/** `POST /v1/introspect` (mounted after authentication): RFC 7662 for any authenticated workload (a resource server). */
export function introspectionRoutes(introspect: ReturnType<typeof createIntrospector>): Router {
  const r = Router();
  mount(r, TOKENS_API.introspect, requireJsonObject, async (req, res) => {
    const { token, resource } = req.body as { token?: unknown; resource?: unknown };
    if (typeof token !== "string" || token.length === 0) throw new BrokerError("invalid_request", "token: required string");
    if (resource !== undefined && (typeof resource !== "string" || resource.length === 0 || resource.length > 2048)) throw new BrokerError("invalid_request", "resource: optional string (RFC 8707)");
    res.json(await introspect(token, resource));
  });
  return r;
}
