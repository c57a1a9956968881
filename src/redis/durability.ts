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
 * Key: {p}:durable   string, PX 10 s: the marker write that WAIT is measured against.
 */
import type { Redis } from "ioredis";
import { writeAndWait } from "./health";

export interface Durability {
  /** Replicas the configuration asks for (0 = no WAIT). */
  replicas: number;
  /** Resolves once `replicas` replicas acknowledged every earlier write; rejects otherwise. */
  confirm(): Promise<void>;
}

export function createDurability(redis: Redis, markerKey: string, cfg: { replicas: number; timeout: number }): Durability {
  return {
    replicas: cfg.replicas,
    async confirm() {
      if (cfg.replicas <= 0) return;
      await writeAndWait(redis, markerKey, cfg.replicas, cfg.timeout, cfg.timeout + 1000);
    },
  };
}
