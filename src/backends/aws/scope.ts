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
 * - first, before anything is parsed or expanded, the document that would be sent (the scope's
 *   statements plus the role's Deny statements) must fit STS's 2,048 characters of U+0009,
 *   U+000A, U+000D and U+0020-U+00FF: this bounds all further work (a request body may be 16 KB;
 *   a 1,000 x 1,000 action/resource product is refused here, unexpanded);
 * - `Version` must be "2012-10-17", in the scope and in the role's session policy: the broker
 *   sends every session policy as 2012-10-17, where `${...}` policy variables are substituted;
 *   under "2008-10-17" or no Version they are literal text, so the same pattern would mean
 *   something else in the role's policy than in the scope (or in the role's Deny statements
 *   re-sent with a scope);
 * - a scope is a policy document of `Allow` and `Deny` statements with `Action` and `Resource`
 *   only (no `NotAction`, `NotResource`, `Principal`, `NotPrincipal`);
 * - `Deny` statements only take away: accepted as they are;
 * - every (action, resource) pair of every `Allow` statement must be covered by one `Allow`
 *   statement of the role's policy (one using `Action` and `Resource`), whose patterns match a
 *   superset (wildcards compared as patterns, see `patternCovers`), and whose conditions the
 *   scope statement repeats exactly (extra conditions in the scope only narrow it further);
 *   condition operators or keys that appear twice in one block differing only in case are
 *   refused (what IAM does with them is not documented);
 * - the role's own `Deny` statements are always appended to the scope sent to STS, so a scope
 *   cannot drop them;
 * - a role without a session policy is capped by its IAM policies alone, which a session policy
 *   can only narrow: any well-formed scope is accepted there.
 * STS's separate packed-size limit (policy and tags, compressed) cannot be computed in advance:
 * its error (PackedPolicyTooLarge) is reported to the caller.
 *
 * Cost: coverage is decided per (role statement, action) and per (role statement, resource),
 * then combined per pair with booleans; `patternCovers` is an iterative dynamic programme,
 * O(|p| x |q|) with no backtracking. With both documents at most 2,048 characters, a check is
 * a few million steps at worst. At most MAX_PROBLEMS problems are listed ("and N more").
 */

export const SESSION_POLICY_MAX_CHARS = 2048;
const POLICY_CHARS = /^[\u0009\u000A\u000D\u0020-\u00FF]*$/;
/** The only Version accepted (see above): policy variables mean the same on both sides. */
export const POLICY_VERSION = "2012-10-17";
/** Problems listed in one answer, at most (then "and N more"). */
export const MAX_PROBLEMS = 10;
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

/** The two element pairs of a statement, checked alike: what each value must look like. */
const ELEMENTS = [
  { key: "Action", notKey: "NotAction", field: "action", notField: "notAction", valid: (a: string) => ACTION.test(a), expected: '"service:Action" (wildcards * and ? allowed) or "*"' },
  { key: "Resource", notKey: "NotResource", field: "resource", notField: "notResource", valid: (r: string) => r === "*" || r.startsWith("arn:"), expected: 'an ARN (arn:...) or "*"' },
] as const;

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
  if (doc.Version === undefined) {
    problems.push(`${where}.Version: required, "${POLICY_VERSION}" (without it, or under "2008-10-17", IAM does not substitute policy variables such as \${aws:username}, and the broker sends session policies as ${POLICY_VERSION})`);
  } else if (doc.Version !== POLICY_VERSION) {
    problems.push(`${where}.Version: must be "${POLICY_VERSION}"`);
  }
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
    for (const el of ELEMENTS) {
      const has = s[el.key] !== undefined;
      const hasNot = s[el.notKey] !== undefined;
      if (has === hasNot && allowed.includes(el.notKey)) problems.push(`${at}: give exactly one of ${el.key} or ${el.notKey}`);
      else if (!has && !allowed.includes(el.notKey)) problems.push(`${at}.${el.key}: required`);
      for (const [key, field] of [[el.key, el.field], [el.notKey, el.notField]] as const) {
        if (s[key] === undefined || !allowed.includes(key)) continue;
        const v = stringList(s[key]);
        if (!v) problems.push(`${at}.${key}: must be a string or a non-empty list of strings`);
        else {
          const bad = v.filter((x) => !el.valid(x));
          if (bad.length) problems.push(`${at}.${key}: ${bad.map((x) => JSON.stringify(x)).join(", ")} ${bad.length === 1 ? "is" : "are"} not ${el.expected}`);
          else st[field] = v;
        }
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
  const ops = new Map<string, string>();
  for (const [op, block] of Object.entries(v)) {
    if (!/^[A-Za-z:]+$/.test(op)) return `"${op}" is not a condition operator`;
    const sameOp = ops.get(op.toLowerCase());
    if (sameOp !== undefined) return `operators "${sameOp}" and "${op}" differ only in case; give each operator once (IAM's handling of such duplicates is not documented)`;
    ops.set(op.toLowerCase(), op);
    if (!isObject(block) || Object.keys(block).length === 0) return `${op}: must be an object of condition keys`;
    out[op] = {};
    const keys = new Map<string, string>();
    for (const [key, values] of Object.entries(block)) {
      const sameKey = keys.get(key.toLowerCase());
      if (sameKey !== undefined) return `${op}: condition keys "${sameKey}" and "${key}" differ only in case (IAM compares keys case-insensitively); give each key once`;
      keys.set(key.toLowerCase(), key);
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
 * the public contract's configuration example) means none: an empty document is not a policy STS would accept.
 */
export function rolePolicyOf(doc: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  return doc === undefined || Object.keys(doc).length === 0 ? undefined : doc;
}

/** Problems of a role's configured session policy (config check). */
export function sessionPolicyProblems(doc: unknown): string[] {
  if (isObject(doc) && Object.keys(doc).length === 0) return [];
  const { problems } = parsePolicy(doc, "session_policy", { forScope: false });
  return capProblems([...problems, ...(isObject(doc) ? sizeProblems(JSON.stringify(doc), "session_policy") : [])]);
}

/**
 * The statements of a role's session policy, parsed once per configured document. Configured
 * documents are never changed in place (a reload brings new objects), so the parse is kept with
 * the object and dropped with it.
 */
const parsedRolePolicies = new WeakMap<Record<string, unknown>, Statement[]>();
function roleStatements(rolePolicy: Record<string, unknown>): Statement[] {
  let statements = parsedRolePolicies.get(rolePolicy);
  if (statements === undefined) {
    statements = parsePolicy(rolePolicy, "session_policy", { forScope: false }).statements;
    parsedRolePolicies.set(rolePolicy, statements);
  }
  return statements;
}

/** The document sent with a scope: its statements plus the role's Deny statements. */
function scopedDocument(roleStatements: Statement[] | undefined, scope: Record<string, unknown>): string {
  const scopeStatements = Array.isArray(scope.Statement) ? scope.Statement : [scope.Statement];
  const roleDenies = roleStatements ? roleStatements.filter((s) => s.effect === "Deny").map((s) => s.raw) : [];
  return JSON.stringify({ Version: POLICY_VERSION, Statement: [...scopeStatements, ...roleDenies] });
}

/**
 * The session policy document sent to STS (minified JSON), or undefined for none: the scope
 * plus the role's Deny statements when a scope is given, else the role's own policy.
 */
export function effectiveSessionPolicy(configured: Record<string, unknown> | undefined, scope: Record<string, unknown> | undefined): string | undefined {
  const rolePolicy = rolePolicyOf(configured);
  if (scope === undefined) return rolePolicy === undefined ? undefined : JSON.stringify(rolePolicy);
  return scopedDocument(rolePolicy && roleStatements(rolePolicy), scope);
}

/** At most MAX_PROBLEMS problems, then one saying how many more there were. */
function capProblems(problems: string[]): string[] {
  if (problems.length <= MAX_PROBLEMS) return problems;
  return [...problems.slice(0, MAX_PROBLEMS), `and ${problems.length - MAX_PROBLEMS} more`];
}

/**
 * Problems with a requested scope for a role whose session policy is `rolePolicy` (none: the
 * role's IAM policies are the only ceiling). Empty when the scope is a sound narrowing.
 * The size and characters of what would be sent are checked first, so the rest of the work is
 * bounded by STS's 2,048 characters whatever the request's size.
 */
export function scopeProblems(configured: Record<string, unknown> | undefined, scope: unknown): string[] {
  return checkScope(configured, scope).problems;
}

/**
 * `scopeProblems`, and when there are none the document to send (`effectiveSessionPolicy` of
 * the scope). The role's session policy is parsed once (cached) for both.
 */
export function checkScope(configured: Record<string, unknown> | undefined, scope: unknown): { problems: string[]; sent?: string } {
  const rolePolicy = rolePolicyOf(configured);
  if (!isObject(scope)) return { problems: ["scope: must be a policy document (an object)"] };
  const role = rolePolicy && roleStatements(rolePolicy);
  let sent: string;
  try {
    sent = scopedDocument(role, scope);
  } catch {
    return { problems: ["scope: must be a JSON policy document"] };
  }
  const size = sizeProblems(sent, "scope");
  if (size.length) return { problems: size };
  const parsed = parsePolicy(scope, "scope", { forScope: true });
  if (parsed.problems.length) return { problems: capProblems(parsed.problems) };
  if (role === undefined) return { problems: [], sent };
  const ceiling = role.filter((s) => s.effect === "Allow" && s.action && s.resource);
  const many = Array.isArray(scope.Statement);
  const problems: string[] = [];
  let uncovered = 0;
  parsed.statements.forEach((q, i) => {
    if (q.effect !== "Allow") return;
    const actions = [...new Set(q.action!)];
    const resources = [...new Set(q.resource!)];
    // Role statements whose conditions the scope statement repeats; then which of its actions
    // and resources each covers (linear in the pattern pairs, not in the action x resource product).
    const eligible = ceiling.filter((p) => conditionsImplied(p.condition, q.condition));
    const actionCovered = eligible.map((p) => actions.map((a) => p.action!.some((pa) => patternCovers(pa, a, { ignoreCase: true }))));
    const resourceCovered = eligible.map((p) => resources.map((r) => p.resource!.some((pr) => patternCovers(pr, r, { ignoreCase: false }))));
    actions.forEach((action, ai) => {
      resources.forEach((resource, ri) => {
        if (eligible.some((_, k) => actionCovered[k]![ai] && resourceCovered[k]![ri])) return;
        uncovered++;
        if (problems.length < MAX_PROBLEMS) {
          problems.push(`scope.Statement${many ? `[${i}]` : ""}: ${JSON.stringify(action)} on ${JSON.stringify(resource)}${q.condition ? " (with these conditions)" : ""} is not within the role's session policy`);
        }
      });
    });
  });
  if (uncovered > problems.length) problems.push(`and ${uncovered - problems.length} more action/resource pairs not within the role's session policy`);
  return problems.length ? { problems } : { problems, sent };
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
  const lastClose = pattern.lastIndexOf("}"); // no "}" after it: an unclosed "${" is literal, without a search
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === "$" && pattern[i + 1] === "{" && i + 2 <= lastClose) {
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
  const n = Q.length;
  // covers(i, j): P[i..] covers Q[j..]. Rows i = |P| down to 0; `next` is row i + 1. Each cell
  // depends on (i + 1, j), (i, j + 1) and (i + 1, j + 1): O(|P| x |Q|) time, O(|Q|) memory.
  let next = new Uint8Array(n + 1);
  let cur = new Uint8Array(n + 1);
  next[n] = 1;
  for (let i = P.length - 1; i >= 0; i--) {
    const pt = P[i]!;
    cur[n] = pt.t === "star" ? next[n]! : 0;
    for (let j = n - 1; j >= 0; j--) {
      const qt = Q[j]!;
      let r = 0;
      if (pt.t === "star") r = next[j]! || (!(qt.t === "lit" && qt.c === ":") && cur[j + 1]!) ? 1 : 0;
      else if (pt.t === "one") r = qt.t === "one" || (qt.t === "lit" && qt.c !== ":") ? next[j + 1]! : 0;
      else if (pt.t === "lit") r = qt.t === "lit" && qt.c === pt.c ? next[j + 1]! : 0;
      else r = qt.t === "var" && qt.v === pt.v ? next[j + 1]! : 0;
      cur[j] = r;
    }
    [next, cur] = [cur, next];
  }
  return next[0] === 1;
}
