/**
 * Session policies (pure): the role's configured `aws_sts.session_policy`, the `scope` a request
 * may add, and the policy document actually sent to STS.
 *
 * What STS does with it: the session's permissions are the intersection of the role's
 * identity-based policies and the session policy, so a session policy can only take away.
 * The broker's ceiling, though, is the role's configured session policy: a request's scope
 * replaces it in the AssumeRole call, so the scope must not allow anything that policy does not.
 *
 * The check is sound, not complete (it may refuse a scope that is in fact narrower; it never
 * accepts a wider one):
 * - a scope is a policy document of `Allow` and `Deny` statements with `Action` and `Resource`
 *   only (no `NotAction`, `NotResource`, `Principal`, `NotPrincipal`);
 * - `Deny` statements only take away: accepted as they are;
 * - every (action, resource) pair of every `Allow` statement must be covered by one `Allow`
 *   statement of the role's policy (one using `Action` and `Resource`), whose patterns match a
 *   superset (wildcards compared as patterns, see `patternCovers`), and whose conditions the
 *   scope statement repeats exactly (extra conditions in the scope only narrow it further);
 * - the role's own `Deny` statements are always appended to the scope sent to STS, so a scope
 *   cannot drop them;
 * - a role without a session policy is capped by its IAM policies alone, which a session policy
 *   can only narrow: any well-formed scope is accepted there.
 * The document sent must fit STS's 2,048-character plain-text limit for session policies
 * (minified JSON; characters U+0009, U+000A, U+000D and U+0020-U+00FF only), checked before
 * anything is minted. STS's separate packed-size limit (policy and tags, compressed) cannot be
 * computed in advance: its error (PackedPolicyTooLarge) is reported to the caller.
 */

export const SESSION_POLICY_MAX_CHARS = 2048;
const POLICY_CHARS = /^[\u0009\u000A\u000D\u0020-\u00FF]*$/;
const VERSIONS = ["2012-10-17", "2008-10-17"];
const SID = /^[A-Za-z0-9]*$/;
const ACTION = /^(\*|[A-Za-z0-9-]+:[A-Za-z0-9*?]+)$/;

type ConditionValue = string | number | boolean;
export interface Statement {
  sid?: string;
  effect: "Allow" | "Deny";
  action?: string[];
  notAction?: string[];
  resource?: string[];
  notResource?: string[];
  /** operator → condition key → values */
  condition?: Record<string, Record<string, ConditionValue[]>>;
  /** The statement as written (sent to STS unchanged). */
  raw: Record<string, unknown>;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);
const stringList = (v: unknown): string[] | null =>
  typeof v === "string" ? [v] : Array.isArray(v) && v.length > 0 && v.every((s) => typeof s === "string") ? (v as string[]) : null;

/** Parses a policy document; `problems` names each defect by its path under `where`. */
export function parsePolicy(doc: unknown, where: string, opts: { forScope: boolean }): { statements: Statement[]; problems: string[] } {
  const problems: string[] = [];
  const statements: Statement[] = [];
  if (!isObject(doc)) return { statements, problems: [`${where}: must be a policy document (an object)`] };
  for (const key of Object.keys(doc)) {
    if (!["Version", "Id", "Statement"].includes(key)) problems.push(`${where}.${key}: unknown policy element`);
  }
  if (doc.Version !== undefined && !VERSIONS.includes(doc.Version as string)) problems.push(`${where}.Version: must be "2012-10-17"`);
  if (doc.Id !== undefined && typeof doc.Id !== "string") problems.push(`${where}.Id: must be a string`);
  const list = Array.isArray(doc.Statement) ? doc.Statement : doc.Statement === undefined ? [] : [doc.Statement];
  if (list.length === 0) problems.push(`${where}.Statement: at least one statement is required`);
  list.forEach((s: unknown, i: number) => {
    const at = Array.isArray(doc.Statement) ? `${where}.Statement[${i}]` : `${where}.Statement`;
    if (!isObject(s)) {
      problems.push(`${at}: must be an object`);
      return;
    }
    const allowed = opts.forScope ? ["Sid", "Effect", "Action", "Resource", "Condition"] : ["Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"];
    for (const key of Object.keys(s)) {
      if (!allowed.includes(key)) {
        problems.push(
          opts.forScope && ["NotAction", "NotResource", "Principal", "NotPrincipal"].includes(key)
            ? `${at}.${key}: not allowed in a requested scope (use Action and Resource)`
            : `${at}.${key}: ${key === "Principal" || key === "NotPrincipal" ? "not allowed in a session policy" : "unknown statement element"}`,
        );
      }
    }
    const st: Statement = { effect: "Allow", raw: s };
    if (s.Sid !== undefined) {
      if (typeof s.Sid !== "string" || !SID.test(s.Sid)) problems.push(`${at}.Sid: must be letters and digits only`);
      else st.sid = s.Sid;
    }
    if (s.Effect !== "Allow" && s.Effect !== "Deny") problems.push(`${at}.Effect: must be "Allow" or "Deny"`);
    else st.effect = s.Effect;
    const hasAction = s.Action !== undefined;
    const hasNotAction = s.NotAction !== undefined;
    if (hasAction === hasNotAction && allowed.includes("NotAction")) problems.push(`${at}: give exactly one of Action or NotAction`);
    else if (!hasAction && !allowed.includes("NotAction")) problems.push(`${at}.Action: required`);
    for (const [key, field] of [["Action", "action"], ["NotAction", "notAction"]] as const) {
      if (s[key] === undefined || !allowed.includes(key)) continue;
      const v = stringList(s[key]);
      if (!v) problems.push(`${at}.${key}: must be a string or a non-empty list of strings`);
      else {
        const bad = v.filter((a) => !ACTION.test(a));
        if (bad.length) problems.push(`${at}.${key}: ${bad.map((a) => JSON.stringify(a)).join(", ")} ${bad.length === 1 ? "is" : "are"} not "service:Action" (wildcards * and ? allowed) or "*"`);
        else st[field] = v;
      }
    }
    const hasResource = s.Resource !== undefined;
    const hasNotResource = s.NotResource !== undefined;
    if (hasResource === hasNotResource && allowed.includes("NotResource")) problems.push(`${at}: give exactly one of Resource or NotResource`);
    else if (!hasResource && !allowed.includes("NotResource")) problems.push(`${at}.Resource: required`);
    for (const [key, field] of [["Resource", "resource"], ["NotResource", "notResource"]] as const) {
      if (s[key] === undefined || !allowed.includes(key)) continue;
      const v = stringList(s[key]);
      if (!v) problems.push(`${at}.${key}: must be a string or a non-empty list of strings`);
      else {
        const bad = v.filter((r) => r !== "*" && !r.startsWith("arn:"));
        if (bad.length) problems.push(`${at}.${key}: ${bad.map((r) => JSON.stringify(r)).join(", ")} ${bad.length === 1 ? "is" : "are"} not an ARN (arn:...) or "*"`);
        else st[field] = v;
      }
    }
    if (s.Condition !== undefined) {
      const c = parseCondition(s.Condition);
      if (typeof c === "string") problems.push(`${at}.Condition: ${c}`);
      else st.condition = c;
    }
    statements.push(st);
  });
  return { statements, problems };
}

function parseCondition(v: unknown): Record<string, Record<string, ConditionValue[]>> | string {
  if (!isObject(v) || Object.keys(v).length === 0) return "must be an object of condition operators";
  const out: Record<string, Record<string, ConditionValue[]>> = {};
  for (const [op, block] of Object.entries(v)) {
    if (!/^[A-Za-z:]+$/.test(op)) return `"${op}" is not a condition operator`;
    if (!isObject(block) || Object.keys(block).length === 0) return `${op}: must be an object of condition keys`;
    out[op] = {};
    for (const [key, values] of Object.entries(block)) {
      const list = Array.isArray(values) ? values : [values];
      if (list.length === 0 || !list.every((x) => typeof x === "string" || typeof x === "number" || typeof x === "boolean")) {
        return `${op}.${key}: values must be strings, numbers or booleans`;
      }
      out[op]![key] = list as ConditionValue[];
    }
  }
  return out;
}

/** Minified JSON, and what is wrong with its size or characters for STS. */
function sizeProblems(text: string, where: string): string[] {
  const problems: string[] = [];
  if (!POLICY_CHARS.test(text)) problems.push(`${where}: only characters U+0020-U+00FF (plus tab and newlines) are allowed in a session policy`);
  if (text.length > SESSION_POLICY_MAX_CHARS) problems.push(`${where}: the session policy sent to STS would be ${text.length} characters; STS allows ${SESSION_POLICY_MAX_CHARS}`);
  return problems;
}

/**
 * A role's session policy as configured, or undefined for none. `session_policy: {}` (as in
 * DESIGN.md's example) means none: an empty document is not a policy STS would accept.
 */
export function rolePolicyOf(doc: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  return doc === undefined || Object.keys(doc).length === 0 ? undefined : doc;
}

/** Problems of a role's configured session policy (config check). */
export function sessionPolicyProblems(doc: unknown): string[] {
  if (isObject(doc) && Object.keys(doc).length === 0) return [];
  const { problems } = parsePolicy(doc, "session_policy", { forScope: false });
  if (problems.length) return problems;
  return sizeProblems(JSON.stringify(doc), "session_policy");
}

/**
 * The session policy document sent to STS (minified JSON), or undefined for none: the scope
 * plus the role's Deny statements when a scope is given, else the role's own policy.
 */
export function effectiveSessionPolicy(configured: Record<string, unknown> | undefined, scope: Record<string, unknown> | undefined): string | undefined {
  const rolePolicy = rolePolicyOf(configured);
  if (scope === undefined) return rolePolicy === undefined ? undefined : JSON.stringify(rolePolicy);
  const scopeStatements = Array.isArray(scope.Statement) ? scope.Statement : [scope.Statement];
  const roleDenies = rolePolicy ? parsePolicy(rolePolicy, "session_policy", { forScope: false }).statements.filter((s) => s.effect === "Deny").map((s) => s.raw) : [];
  return JSON.stringify({ Version: "2012-10-17", Statement: [...scopeStatements, ...roleDenies] });
}

/**
 * Problems with a requested scope for a role whose session policy is `rolePolicy` (none: the
 * role's IAM policies are the only ceiling). Empty when the scope is a sound narrowing.
 */
export function scopeProblems(configured: Record<string, unknown> | undefined, scope: unknown): string[] {
  const rolePolicy = rolePolicyOf(configured);
  const parsed = parsePolicy(scope, "scope", { forScope: true });
  if (parsed.problems.length) return parsed.problems;
  const problems: string[] = [];
  if (rolePolicy !== undefined) {
    const ceiling = parsePolicy(rolePolicy, "session_policy", { forScope: false }).statements.filter((s) => s.effect === "Allow" && s.action && s.resource);
    const many = Array.isArray((scope as Record<string, unknown>).Statement);
    parsed.statements.forEach((q, i) => {
      if (q.effect !== "Allow") return;
      for (const action of q.action!) {
        for (const resource of q.resource!) {
          const covered = ceiling.some(
            (p) =>
              p.action!.some((pa) => patternCovers(pa, action, { ignoreCase: true })) &&
              p.resource!.some((pr) => patternCovers(pr, resource, { ignoreCase: false })) &&
              conditionsImplied(p.condition, q.condition),
          );
          if (!covered) {
            problems.push(`scope.Statement${many ? `[${i}]` : ""}: ${JSON.stringify(action)} on ${JSON.stringify(resource)}${q.condition ? " (with these conditions)" : ""} is not within the role's session policy`);
          }
        }
      }
    });
  }
  if (problems.length) return problems;
  return sizeProblems(effectiveSessionPolicy(rolePolicy, scope as Record<string, unknown>)!, "scope");
}

/**
 * True when every condition of the role statement `p` is repeated exactly (same operator, same
 * key, same set of values) in the scope statement `q`. Conditions of one statement are ANDed, so
 * `q` then applies to a subset of the requests `p` applies to.
 */
function conditionsImplied(p: Statement["condition"], q: Statement["condition"]): boolean {
  if (!p) return true;
  if (!q) return false;
  for (const [op, keys] of Object.entries(p)) {
    const qBlock = q[op];
    if (!qBlock) return false;
    for (const [key, values] of Object.entries(keys)) {
      const qKey = Object.keys(qBlock).find((k) => k.toLowerCase() === key.toLowerCase());
      if (qKey === undefined) return false;
      const a = new Set(values.map(String));
      const b = new Set(qBlock[qKey]!.map(String));
      if (a.size !== b.size || [...a].some((x) => !b.has(x))) return false;
    }
  }
  return true;
}

type Token = { t: "lit"; c: string } | { t: "star" } | { t: "one" } | { t: "var"; v: string };

function tokenize(pattern: string, ignoreCase: boolean): Token[] {
  const out: Token[] = [];
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === "$" && pattern[i + 1] === "{") {
      const end = pattern.indexOf("}", i + 2);
      if (end > 0) {
        out.push({ t: "var", v: pattern.slice(i, end + 1) });
        i = end;
        continue;
      }
    }
    if (ch === "*") out.push({ t: "star" });
    else if (ch === "?") out.push({ t: "one" });
    else out.push({ t: "lit", c: ignoreCase ? ch.toLowerCase() : ch });
  }
  return out;
}

/**
 * Does IAM pattern `p` match every string pattern `q` can match? Wildcards: `*` any run of
 * characters, `?` one character, `${...}` a policy variable (its value is unknown: in `q` only a
 * `*` of `p` or the same variable covers it). A `:` of `q` must be matched by a `:` of `p`, so
 * ARN segments line up whether or not IAM lets a wildcard span segments; `p` = `*` alone covers
 * everything. Sound (never true when some string matches `q` but not `p`), not complete.
 */
export function patternCovers(p: string, q: string, opts: { ignoreCase: boolean }): boolean {
  if (p === "*") return true;
  const P = tokenize(p, opts.ignoreCase);
  const Q = tokenize(q, opts.ignoreCase);
  const memo = new Map<number, boolean>();
  const match = (i: number, j: number): boolean => {
    const key = i * (Q.length + 1) + j;
    const hit = memo.get(key);
    if (hit !== undefined) return hit;
    let r: boolean;
    const pt = P[i];
    const qt = Q[j];
    if (pt === undefined) r = qt === undefined;
    else if (pt.t === "star") r = match(i + 1, j) || (qt !== undefined && !(qt.t === "lit" && qt.c === ":") && match(i, j + 1));
    else if (pt.t === "one") r = qt !== undefined && (qt.t === "one" || (qt.t === "lit" && qt.c !== ":")) && match(i + 1, j + 1);
    else if (pt.t === "lit") r = qt !== undefined && qt.t === "lit" && qt.c === pt.c && match(i + 1, j + 1);
    else r = qt !== undefined && qt.t === "var" && qt.v === pt.v && match(i + 1, j + 1);
    memo.set(key, r);
    return r;
  };
  return match(0, 0);
}
