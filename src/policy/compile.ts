/**
 * Compiling Cedar policy files into a PolicySet: parse every policy, give it an id, check the
 * broker's annotations, hash the set. Pure: no I/O (files.ts reads the files).
 */
import { createHash } from "node:crypto";
import path from "node:path";
import * as cedar from "@cedar-policy/cedar-wasm/nodejs";
import { parseDuration } from "../core/duration";
import { byteToCharOffset, lineAt, splitStatements, type Statement } from "./source";
import { PolicyError, type CompiledPolicy, type PolicyFile, type PolicySet } from "./types";

/** What the engine needs from a policy's annotations, checked once at compile time. */
export interface PolicyMeta {
  effect: "permit" | "forbid";
  /** `@max_ttl` in whole seconds. */
  maxTtlSeconds?: number;
  approvalRequired: boolean;
}

/**
 * Reads the broker's annotations of one policy. Returns problems (without location) rather than
 * throwing, so compilePolicies can report them all.
 *  - `@max_ttl("<duration>")` (parseDuration syntax, at least 1s) clamps the lease; permits only.
 *  - `@approval("required" | "none")`; permits only. Any other value is refused, so that a typo
 *    such as `@approval("requried")` cannot silently drop the approval step.
 */
export function readPolicyMeta(
  effect: "permit" | "forbid",
  annotations: Record<string, string>,
): { meta: PolicyMeta; problems: { annotation: string; message: string }[] } {
  const problems: { annotation: string; message: string }[] = [];
  const meta: PolicyMeta = { effect, approvalRequired: false };
  const maxTtl = annotations["max_ttl"];
  if (maxTtl !== undefined) {
    if (effect !== "permit") {
      problems.push({ annotation: "max_ttl", message: "@max_ttl only applies to permit policies" });
    } else {
      try {
        const ms = parseDuration(maxTtl);
        if (ms < 1000) throw new Error(`"${maxTtl}" is shorter than 1s`);
        meta.maxTtlSeconds = Math.floor(ms / 1000);
      } catch (e) {
        problems.push({ annotation: "max_ttl", message: `invalid @max_ttl: ${(e as Error).message}` });
      }
    }
  }
  const approval = annotations["approval"];
  if (approval !== undefined) {
    if (effect !== "permit") {
      problems.push({ annotation: "approval", message: "@approval only applies to permit policies" });
    } else if (approval === "required") {
      meta.approvalRequired = true;
    } else if (approval !== "none") {
      problems.push({ annotation: "approval", message: `invalid @approval("${approval}"): use "required" or "none"` });
    }
  }
  return { meta, problems };
}

/** sha256 hex of JSON `[[id, text], ...]` sorted by id: independent of file names and order. */
export function hashPolicies(policies: readonly Pick<CompiledPolicy, "id" | "text">[]): string {
  const canonical = policies
    .map((p) => [p.id, p.text] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return createHash("sha256").update(JSON.stringify(canonical)).digest("hex");
}

function cedarMessage(err: cedar.DetailedError): string {
  let msg = err.message.replace(/^failed to parse polic(y|ies) from string: /, "");
  const label = err.sourceLocations?.find((l) => l.label)?.label;
  if (label) msg += ` (${label})`;
  if (err.help) msg += `; ${err.help}`;
  return msg;
}

/** Line of an annotation token (`@name`) in a statement, else the statement's first line. */
function annotationLine(fileText: string, st: Statement, name: string): number {
  const m = new RegExp(`@\\s*${name}\\b`).exec(st.masked);
  return lineAt(fileText, st.start + (m ? m.index : 0));
}

/**
 * Compiles policy files into a set. Throws PolicyError listing every problem as
 * "file:line: message": syntax errors (each broken policy of each file), templates (not
 * supported: every policy must be static), invalid broker annotations, duplicate ids.
 * Zero files or zero policies is valid: an empty set denies everything.
 */
export function compilePolicies(files: PolicyFile[]): PolicySet {
  const problems: string[] = [];
  const policies: CompiledPolicy[] = [];
  const firstSeen = new Map<string, string>(); // id -> "file:line"

  for (const file of files) {
    const statements = splitStatements(file.text);
    const base = path.basename(file.path);
    let fileOk = true;
    statements.forEach((st, index) => {
      const where = (line: number) => `${file.path}:${line}`;
      const parsed = cedar.policyToJson(st.text);
      if (parsed.type !== "success") {
        fileOk = false;
        for (const err of parsed.errors) {
          const loc = err.sourceLocations?.[0];
          const offset = loc ? st.start + byteToCharOffset(st.text, loc.start) : st.start;
          problems.push(`${where(lineAt(file.text, offset))}: ${cedarMessage(err)}`);
        }
        return;
      }
      const annotations: Record<string, string> = {};
      for (const [k, v] of Object.entries(parsed.json.annotations ?? {})) annotations[k] = v ?? "";
      const line = lineAt(file.text, st.start);
      const effect = parsed.json.effect;
      const { problems: annProblems } = readPolicyMeta(effect, annotations);
      for (const p of annProblems) problems.push(`${where(annotationLine(file.text, st, p.annotation))}: ${p.message}`);

      let id = annotations["id"];
      if (id !== undefined && id.trim() === "") {
        problems.push(`${where(annotationLine(file.text, st, "id"))}: @id must not be empty`);
        return;
      }
      id ??= `${base}#${index}`;
      const previous = firstSeen.get(id);
      if (previous !== undefined) {
        problems.push(`${where(line)}: duplicate policy id "${id}" (first defined at ${previous})`);
        return;
      }
      firstSeen.set(id, where(line));
      policies.push({ id, effect, annotations, file: file.path, text: st.text, line });
    });

    // Cross-check the statement split against Cedar's own reading of the whole file.
    if (fileOk && statements.length > 0) {
      const parts = cedar.policySetTextToParts(file.text);
      const mine = statements.map((s) => s.text.trim()).sort();
      const theirs = parts.type === "success" ? [...parts.policies, ...parts.policy_templates].map((s) => s.trim()).sort() : [];
      if (parts.type !== "success" || JSON.stringify(mine) !== JSON.stringify(theirs)) {
        const detail = parts.type === "success" ? "policies split differently" : parts.errors.map(cedarMessage).join("; ");
        problems.push(`${file.path}:1: the file does not parse as one Cedar policy set: ${detail}`);
      }
    }
  }

  if (problems.length > 0) throw new PolicyError(problems);
  return { policies, hash: hashPolicies(policies) };
}
