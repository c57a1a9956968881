/**
 * Exported audit files (the `file` sink's JSON lines, and anything else that stores the same
 * lines): the line format and the offline check behind `jitbroker audit verify --file F...`.
 *
 * One line per event: the event's own fields plus
 *   seq        its place in the chain (the Redis stream id)
 *   hash       its link
 *   prev       the previous event's link
 *   link_kind  "hmac-sha256" (keyed) or "sha256" (written before the chain was keyed)
 * The event's canonical JSON (the MAC's input) is recomputed from the other fields, so a line
 * can be re-serialised by a log shipper without breaking the check, as long as values survive.
 *
 * The check reads every file given, in any order (rotated files included), orders the lines by
 * seq and walks the chain with the key. A seq seen twice with the same link is one event (a sink
 * delivers at least once: a crash can repeat a batch); with another link it is a break. A last
 * line without its newline (a crash while writing) is skipped and reported, since the sink writes
 * it again in full after a restart.
 */
import { readFile } from "node:fs/promises";
import { canonicalJSON, type ExportedAuditEvent } from "./ledger";
import { compareSeq, createChainChecker, KEYED_MARKER, type ChainCheckResult } from "./chain";
import type { AuditKey } from "./key";

export function exportLine(ev: ExportedAuditEvent): string {
  return `${JSON.stringify(ev)}\n`;
}

const CHAIN_FIELDS = new Set(["seq", "hash", "prev", "link_kind"]);
const SEQ = /^\d+-\d+$/;

export interface FileVerifyResult extends ChainCheckResult {
  /** Lines that repeated an event already read (same seq, same link). */
  duplicates: number;
  /** Files whose last line was incomplete (skipped). */
  partialLines: string[];
}

interface Line {
  seq: string;
  e?: string;
  h?: string;
  p?: string;
  m?: string;
  where: string;
  problem?: string;
}

function parseLine(text: string, where: string): Line {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch {
    return { seq: "", where, problem: `${where} is not JSON` };
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) return { seq: "", where, problem: `${where} is not a JSON object` };
  const rec = obj as Record<string, unknown>;
  const { seq, hash, prev, link_kind: kind } = rec;
  if (typeof seq !== "string" || !SEQ.test(seq)) return { seq: "", where, problem: `${where} has no valid seq` };
  const event: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(rec)) if (!CHAIN_FIELDS.has(k)) event[k] = v;
  let e: string | undefined;
  try {
    e = canonicalJSON(event);
  } catch {
    return { seq, where, problem: `${where}: the event cannot be put in canonical form` };
  }
  return {
    seq,
    e,
    where,
    ...(typeof hash === "string" ? { h: hash } : {}),
    ...(typeof prev === "string" ? { p: prev } : {}),
    ...(kind === "hmac-sha256" ? { m: KEYED_MARKER } : kind === "sha256" ? {} : { m: `unknown:${String(kind)}` }),
  };
}

export async function verifyAuditFiles(key: AuditKey, files: string[]): Promise<FileVerifyResult> {
  const lines: Line[] = [];
  const partialLines: string[] = [];
  const bad: Line[] = [];
  for (const file of files) {
    const text = await readFile(file, "utf8");
    const parts = text.split("\n");
    const last = parts.pop(); // "" when the file ends with a newline
    if (last !== undefined && last !== "") partialLines.push(file);
    parts.forEach((t, i) => {
      if (t.trim() === "") return;
      const l = parseLine(t, `${file}:${i + 1}`);
      if (l.problem) bad.push(l);
      else lines.push(l);
    });
  }
  lines.sort((a, b) => compareSeq(a.seq, b.seq));
  const checker = createChainChecker(key, { allowAnyStart: true });
  for (const l of bad) checker.fail(l.problem!, l.seq);
  let duplicates = 0;
  let previous: Line | undefined;
  for (const l of lines) {
    if (previous && previous.seq === l.seq) {
      if (previous.h === l.h && previous.e === l.e && previous.p === l.p) {
        duplicates += 1;
        continue;
      }
      checker.fail(`two different events carry seq ${l.seq} (${previous.where} and ${l.where})`, l.seq);
      continue;
    }
    checker.push(l);
    previous = l;
  }
  return { ...checker.result(), duplicates, partialLines };
}
