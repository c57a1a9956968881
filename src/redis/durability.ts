/**
 * I1 with `redis.durability.replicas` > 0: before a credential is answered, the writes that
 * track it (lease record, its schedule, the mint event) must have reached that many replicas,
 * so a failover cannot lose them.
 *
 * Redis `WAIT n t` blocks until every write the *calling connection* made has reached n
 * replicas. The lease's writes go over several connections (API, BullMQ queue, audit), so
 * `confirm` first writes one small key on the API connection, after all of them completed: the
 * replication stream is ordered, so its offset covers every earlier write, and the WAIT that
 * follows in the same pipeline (sent by a Cluster client to the node owning the broker's hash
 * tag, where all those keys live) acknowledges them all.
 *
 * With `redis.shards` > 1 the lease's writes are on its workload's shard and the audit event on
 * the base tag, which a Cluster may place on another primary: the marker is written, and WAIT
 * sent, on both (in parallel).
 *
 * Key: {p}:durable   string, PX 10 s: the marker write that WAIT is measured against (base tag,
 *                    and each shard's tag with several shards).
 */
import type { Redis } from "ioredis";
import { writeAndWait } from "./health";
import type { Keyspace } from "./keys";

export interface Durability {
  /** Replicas the configuration asks for (0 = no WAIT). */
  replicas: number;
  /**
   * Resolves once `replicas` replicas acknowledged every earlier write (of `workload`'s shard
   * and of the base tag); rejects otherwise.
   */
  confirm(workload?: string): Promise<void>;
}

export function createDurability(redis: Redis, keys: Keyspace | string, cfg: { replicas: number; timeout: number }): Durability {
  const base = typeof keys === "string" ? keys : keys.durable;
  return {
    replicas: cfg.replicas,
    async confirm(workload) {
      if (cfg.replicas <= 0) return;
      const markers = [base];
      if (typeof keys !== "string" && keys.shards > 1 && workload !== undefined) markers.push(keys.forWorkload(workload).durable);
      await Promise.all(markers.map((m) => writeAndWait(redis, m, cfg.replicas, cfg.timeout, cfg.timeout + 1000)));
    },
  };
}
