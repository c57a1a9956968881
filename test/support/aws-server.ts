/**
 * A local STS + IAM endpoint speaking the AWS query protocol as documented, for driving the real
 * @aws-sdk/client-sts and @aws-sdk/client-iam clients in tests.
 *
 * Requests: POST / with a form-encoded body `Action=...&Version=...&<params>`; `Version`
 * 2011-06-15 is STS, 2010-05-08 is IAM (both may share one endpoint). Lists are
 * `Name.member.N[.Field]`. Every request must be SigV4-signed (an Authorization header).
 * Responses: `<ActionResponse xmlns="..."><ActionResult>...</ActionResult><ResponseMetadata>`;
 * errors: `<ErrorResponse><Error><Type>Sender|Receiver</Type><Code>..</Code><Message>..</Message>
 * </Error><RequestId>..</RequestId></ErrorResponse>` with the documented HTTP status.
 *
 * Implemented: STS AssumeRole, GetCallerIdentity (the broker's principal is
 * `arn:aws:iam::<callerAccount>:user/broker`; `callerAccount` defaults to `account`, the account
 * of the roles this endpoint hosts, and IAM calls act on `account`, as IAM acts on the caller's);
 * IAM GetRole, GetRolePolicy (document URL-encoded, RFC 3986),
 * PutRolePolicy, DeleteRolePolicy. Limits enforced as the API references state them:
 * RoleSessionName 2-64 of [\w+=,.@-]; DurationSeconds 900-43200 and at most the role's
 * MaxSessionDuration; Policy at most 2,048 characters of U+0009/A/D, U+0020-U+00FF, valid JSON
 * (MalformedPolicyDocument) and a packed size (policy and tags, compressed) of at most 100%
 * (PackedPolicyTooLarge; the capacity is a test knob, AWS does not publish it); SourceIdentity
 * 2-64 of [\w+=,.@-], not starting with aws:; at most 50 tags, keys 1-128 and values 0-256 of
 * [\p{L}\p{Z}\p{N}_.:/=+\-@], no aws: keys, no duplicate keys (case-insensitive); ExternalId
 * 2-1224 of [\w+=,.@:/-] and must match the role's when it has one (else AccessDenied);
 * PolicyName 1-128 of [\w+=,.@-]; policy grammar (Effect, Action/NotAction, Resource/NotResource,
 * alphanumeric unique Sids); a role's inline policies together at most 10,240 characters not
 * counting whitespace (LimitExceeded, 409); unknown role NoSuchEntity (404; AccessDenied for
 * AssumeRole).
 *
 * Test knobs: `fail(action, code, times)` answers the next calls with an error, `delay(action,
 * ms)` slows an action down, `now` is injectable (Expiration and TokenIssueTime use it), and
 * `denies(session)` evaluates the role's inline Deny statements for a session (aws:userid,
 * aws:TokenIssueTime, aws:CurrentTime with StringEquals/StringLike/DateLessThan/DateGreaterThan).
 */
import { randomBytes } from "node:crypto";
import { deflateRawSync } from "node:zlib";
import { startRecordingServer } from "./http-server";

const STS_VERSION = "2011-06-15";
const IAM_VERSION = "2010-05-08";
const NS = { sts: "https://sts.amazonaws.com/doc/2011-06-15/", iam: "https://iam.amazonaws.com/doc/2010-05-08/" };
export const ROLE_INLINE_LIMIT = 10_240;

const ERRORS: Record<string, { status: number; type: "Sender" | "Receiver" }> = {
  AccessDenied: { status: 403, type: "Sender" },
  Throttling: { status: 400, type: "Sender" },
  MalformedPolicyDocument: { status: 400, type: "Sender" },
  PackedPolicyTooLarge: { status: 400, type: "Sender" },
  ValidationError: { status: 400, type: "Sender" },
  InvalidParameterValue: { status: 400, type: "Sender" },
  LimitExceeded: { status: 409, type: "Sender" },
  NoSuchEntity: { status: 404, type: "Sender" },
  MissingAuthenticationToken: { status: 403, type: "Sender" },
  InvalidAction: { status: 400, type: "Sender" },
  ServiceFailure: { status: 500, type: "Receiver" },
  ServiceUnavailable: { status: 503, type: "Receiver" },
};

class AwsFault extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface FakeRole {
  name: string;
  arn: string;
  roleId: string;
  maxSessionDuration: number;
  externalId?: string;
  /** Inline policies: name → document as put. */
  policies: Map<string, string>;
}

export interface IssuedSession {
  roleName: string;
  sessionName: string;
  /** aws:userid of the session. */
  userId: string;
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  /** aws:TokenIssueTime, ms. */
  issuedAt: number;
  expiresAt: number;
  duration: number;
  policy?: string;
  sourceIdentity?: string;
  externalId?: string;
  tags: { Key: string; Value: string }[];
  transitiveTagKeys: string[];
}

export interface RecordedRequest {
  service: "sts" | "iam";
  action: string;
  params: Record<string, string>;
  authorization: string;
}

const xmlEscape = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const isoSeconds = (ms: number) => new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(".000Z", "Z");
const NAME = /^[\w+=,.@-]*$/;
const TAG = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u;
const POLICY_CHARS = /^[\u0009\u000A\u000D\u0020-\u00FF]*$/;
const upperAlnum = (n: number) => Array.from(randomBytes(n), (b) => "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[b % 32]).join("");

/** IAM policy grammar, as much as the broker's documents need. Throws MalformedPolicyDocument. */
function checkPolicyGrammar(text: string): Record<string, unknown> {
  if (!POLICY_CHARS.test(text)) throw new AwsFault("MalformedPolicyDocument", "The policy contains characters outside the allowed range.");
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new AwsFault("MalformedPolicyDocument", "The policy is not in the valid JSON format.");
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) throw new AwsFault("MalformedPolicyDocument", "Policy document should be an object.");
  const d = doc as Record<string, unknown>;
  if (d.Version !== undefined && d.Version !== "2012-10-17" && d.Version !== "2008-10-17") throw new AwsFault("MalformedPolicyDocument", "The policy must contain a valid version string");
  const list = Array.isArray(d.Statement) ? d.Statement : d.Statement === undefined ? [] : [d.Statement];
  if (list.length === 0) throw new AwsFault("MalformedPolicyDocument", "Syntax errors in policy.");
  const sids = new Set<string>();
  for (const s of list as Record<string, unknown>[]) {
    if (s === null || typeof s !== "object") throw new AwsFault("MalformedPolicyDocument", "Syntax errors in policy.");
    if (s.Effect !== "Allow" && s.Effect !== "Deny") throw new AwsFault("MalformedPolicyDocument", "Policy statement must contain a valid Effect.");
    if ((s.Action === undefined) === (s.NotAction === undefined)) throw new AwsFault("MalformedPolicyDocument", "Policy statement must contain actions.");
    if ((s.Resource === undefined) === (s.NotResource === undefined)) throw new AwsFault("MalformedPolicyDocument", "Policy statement must contain resources.");
    if (s.Principal !== undefined || s.NotPrincipal !== undefined) throw new AwsFault("MalformedPolicyDocument", "Policy document should not specify a principal.");
    if (s.Sid !== undefined) {
      if (typeof s.Sid !== "string" || !/^[0-9A-Za-z]*$/.test(s.Sid)) {
        throw new AwsFault("MalformedPolicyDocument", "Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the regular expression [0-9A-Za-z]*");
      }
      if (sids.has(s.Sid)) throw new AwsFault("MalformedPolicyDocument", "Statement IDs (SID) in a single policy must be unique.");
      sids.add(s.Sid);
    }
  }
  return d;
}

function listParam(params: Record<string, string>, name: string): string[] {
  const out: string[] = [];
  for (let i = 1; params[`${name}.member.${i}`] !== undefined; i++) out.push(params[`${name}.member.${i}`]!);
  return out;
}

function globMatch(pattern: string, value: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`, "s");
  return re.test(value);
}

export async function startAwsServer(opts: { now?: () => number; account?: string; callerAccount?: string; packedCapacityBytes?: number } = {}) {
  const now = opts.now ?? Date.now;
  const account = opts.account ?? "123456789012";
  const callerAccount = opts.callerAccount ?? account;
  let packedCapacity = opts.packedCapacityBytes ?? 1024;
  const roles = new Map<string, FakeRole>();
  const sessions: IssuedSession[] = [];
  const requests: RecordedRequest[] = [];
  const faults = new Map<string, { code: string; message: string }[]>();
  const delays = new Map<string, number>();
  /** Answers waiting for their delay (cleared by close). */
  const pending = new Set<NodeJS.Timeout>();

  function roleByArn(arn: string): FakeRole | undefined {
    const m = /^arn:aws:iam::(\d{12}):role\/(?:.*\/)?([\w+=,.@-]+)$/.exec(arn);
    if (!m || m[1] !== account) return undefined;
    const r = roles.get(m[2]!);
    return r && r.arn === arn ? r : undefined;
  }

  function assumeRole(p: Record<string, string>): string {
    const arn = p.RoleArn;
    const name = p.RoleSessionName;
    if (!arn || arn.length < 20 || arn.length > 2048) throw new AwsFault("ValidationError", "1 validation error detected: Value at 'roleArn' failed to satisfy constraint: Member must have length greater than or equal to 20");
    if (name === undefined || name.length < 2 || name.length > 64 || !NAME.test(name)) {
      throw new AwsFault("ValidationError", `1 validation error detected: Value '${name}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*`);
    }
    const duration = p.DurationSeconds === undefined ? 3600 : Number(p.DurationSeconds);
    if (!Number.isInteger(duration) || duration < 900 || duration > 43_200) {
      throw new AwsFault("ValidationError", `1 validation error detected: Value '${p.DurationSeconds}' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900`);
    }
    if (p.SourceIdentity !== undefined) {
      const s = p.SourceIdentity;
      if (s.length < 2 || s.length > 64 || !NAME.test(s)) throw new AwsFault("ValidationError", `1 validation error detected: Value '${s}' at 'sourceIdentity' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*`);
      if (s.toLowerCase().startsWith("aws:")) throw new AwsFault("ValidationError", "SourceIdentity must not begin with aws:");
    }
    if (p.ExternalId !== undefined && (p.ExternalId.length < 2 || p.ExternalId.length > 1224 || !/^[\w+=,.@:/-]*$/.test(p.ExternalId))) {
      throw new AwsFault("ValidationError", "1 validation error detected: Value at 'externalId' failed to satisfy constraint");
    }
    const tags: { Key: string; Value: string }[] = [];
    for (let i = 1; p[`Tags.member.${i}.Key`] !== undefined; i++) tags.push({ Key: p[`Tags.member.${i}.Key`]!, Value: p[`Tags.member.${i}.Value`] ?? "" });
    if (tags.length > 50) throw new AwsFault("ValidationError", "1 validation error detected: Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50");
    const seen = new Set<string>();
    for (const t of tags) {
      if (t.Key.length < 1 || t.Key.length > 128 || !TAG.test(t.Key)) throw new AwsFault("ValidationError", `1 validation error detected: Value '${t.Key}' at 'tags.key' failed to satisfy constraint`);
      if ([...t.Value].length > 256 || !TAG.test(t.Value)) throw new AwsFault("ValidationError", `1 validation error detected: Value at 'tags.value' failed to satisfy constraint`);
      if (t.Key.toLowerCase().startsWith("aws:")) throw new AwsFault("InvalidParameterValue", "Tag keys must not start with aws:");
      if (seen.has(t.Key.toLowerCase())) throw new AwsFault("InvalidParameterValue", "Duplicate tag keys found. Please note that Tag keys are case insensitive.");
      seen.add(t.Key.toLowerCase());
    }
    const transitive = listParam(p, "TransitiveTagKeys");
    if (p.Policy !== undefined) {
      if (p.Policy.length > 2048) throw new AwsFault("ValidationError", "1 validation error detected: Value at 'policy' failed to satisfy constraint: Member must have length less than or equal to 2048");
      checkPolicyGrammar(p.Policy);
    }
    const packed = Math.ceil((deflateRawSync(Buffer.from((p.Policy ?? "") + JSON.stringify(tags))).length / packedCapacity) * 100);
    if (packed > 100) throw new AwsFault("PackedPolicyTooLarge", `Packed policy consumes ${packed}% of allotted space, please use smaller policy.`);
    const role = roleByArn(arn);
    if (!role) throw new AwsFault("AccessDenied", `User: arn:aws:iam::${callerAccount}:user/broker is not authorized to perform: sts:AssumeRole on resource: ${arn}`);
    if (duration > role.maxSessionDuration) throw new AwsFault("ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.");
    if (role.externalId !== undefined && p.ExternalId !== role.externalId) {
      throw new AwsFault("AccessDenied", `User: arn:aws:iam::${callerAccount}:user/broker is not authorized to perform: sts:AssumeRole on resource: ${arn}`);
    }
    const issuedAt = now();
    const s: IssuedSession = {
      roleName: role.name,
      sessionName: name,
      userId: `${role.roleId}:${name}`,
      accessKeyId: `ASIA${upperAlnum(16)}`,
      secretAccessKey: randomBytes(30).toString("base64"),
      sessionToken: `IQoJb3JpZ2luX2VjE${randomBytes(180).toString("base64")}`,
      issuedAt,
      expiresAt: issuedAt + duration * 1000,
      duration,
      ...(p.Policy !== undefined ? { policy: p.Policy } : {}),
      ...(p.SourceIdentity !== undefined ? { sourceIdentity: p.SourceIdentity } : {}),
      ...(p.ExternalId !== undefined ? { externalId: p.ExternalId } : {}),
      tags,
      transitiveTagKeys: transitive,
    };
    sessions.push(s);
    return (
      `<AssumeRoleResult>` +
      (s.sourceIdentity ? `<SourceIdentity>${xmlEscape(s.sourceIdentity)}</SourceIdentity>` : "") +
      `<AssumedRoleUser><Arn>arn:aws:sts::${account}:assumed-role/${role.name}/${xmlEscape(name)}</Arn><AssumedRoleId>${xmlEscape(s.userId)}</AssumedRoleId></AssumedRoleUser>` +
      `<Credentials><AccessKeyId>${s.accessKeyId}</AccessKeyId><SecretAccessKey>${xmlEscape(s.secretAccessKey)}</SecretAccessKey>` +
      `<SessionToken>${xmlEscape(s.sessionToken)}</SessionToken><Expiration>${isoSeconds(s.expiresAt)}</Expiration></Credentials>` +
      `<PackedPolicySize>${packed}</PackedPolicySize></AssumeRoleResult>`
    );
  }

  function roleFor(p: Record<string, string>): FakeRole {
    const name = p.RoleName ?? "";
    const role = roles.get(name);
    if (!role) throw new AwsFault("NoSuchEntity", `The role with name ${name} cannot be found.`);
    return role;
  }

  function iamAction(action: string, p: Record<string, string>): string {
    switch (action) {
      case "GetRole": {
        const r = roleFor(p);
        return (
          `<GetRoleResult><Role><Path>${xmlEscape(/:role(\/(?:.*\/)?)[^/]+$/.exec(r.arn)?.[1] ?? "/")}</Path><Arn>${r.arn}</Arn><RoleName>${r.name}</RoleName><RoleId>${r.roleId}</RoleId>` +
          `<AssumeRolePolicyDocument>${encodeURIComponent('{"Version":"2012-10-17","Statement":[]}')}</AssumeRolePolicyDocument>` +
          `<CreateDate>2024-01-01T00:00:00Z</CreateDate><MaxSessionDuration>${r.maxSessionDuration}</MaxSessionDuration></Role></GetRoleResult>`
        );
      }
      case "GetRolePolicy": {
        const r = roleFor(p);
        const doc = r.policies.get(p.PolicyName ?? "");
        if (doc === undefined) throw new AwsFault("NoSuchEntity", `The role policy with name ${p.PolicyName} cannot be found.`);
        return `<GetRolePolicyResult><PolicyName>${xmlEscape(p.PolicyName!)}</PolicyName><RoleName>${r.name}</RoleName><PolicyDocument>${encodeURIComponent(doc)}</PolicyDocument></GetRolePolicyResult>`;
      }
      case "PutRolePolicy": {
        const name = p.PolicyName ?? "";
        if (name.length < 1 || name.length > 128 || !NAME.test(name)) throw new AwsFault("ValidationError", `1 validation error detected: Value '${name}' at 'policyName' failed to satisfy constraint`);
        const doc = p.PolicyDocument ?? "";
        if (doc.length < 1 || doc.length > 131_072) throw new AwsFault("ValidationError", "1 validation error detected: Value at 'policyDocument' failed to satisfy constraint");
        checkPolicyGrammar(doc);
        const r = roleFor(p);
        const size = (t: string) => t.replace(/\s/g, "").length;
        let total = size(doc);
        for (const [n, d] of r.policies) if (n !== name) total += size(d);
        if (total > ROLE_INLINE_LIMIT) throw new AwsFault("LimitExceeded", `Maximum policy size of ${ROLE_INLINE_LIMIT} bytes exceeded for role ${r.name}`);
        r.policies.set(name, doc);
        return "";
      }
      case "DeleteRolePolicy": {
        const r = roleFor(p);
        if (!r.policies.delete(p.PolicyName ?? "")) throw new AwsFault("NoSuchEntity", `The role policy with name ${p.PolicyName} cannot be found.`);
        return "";
      }
      default:
        throw new AwsFault("InvalidAction", `Could not find operation ${action} for version ${IAM_VERSION}`);
    }
  }

  const server = await startRecordingServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      (() => {
        const params = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString("utf8")));
        const action = params.Action ?? "";
        const service = params.Version === STS_VERSION ? "sts" : params.Version === IAM_VERSION ? "iam" : null;
        const requestId = randomBytes(16).toString("hex");
        // The answer is computed on arrival and sent after the action's delay (a slow network).
        const wait = delays.get(action) ?? 0;
        const send = (status: number, body: string) => {
          const t = setTimeout(() => {
            pending.delete(t);
            res.writeHead(status, { "content-type": "text/xml", "x-amzn-requestid": requestId });
            res.end(body);
          }, wait);
          pending.add(t);
        };
        const fail = (code: string, message: string, ns: string) => {
          const e = ERRORS[code] ?? { status: 400, type: "Sender" as const };
          send(e.status, `<ErrorResponse xmlns="${ns}"><Error><Type>${e.type}</Type><Code>${code}</Code><Message>${xmlEscape(message)}</Message></Error><RequestId>${requestId}</RequestId></ErrorResponse>`);
        };
        if (req.method !== "POST" || service === null) return fail("InvalidAction", "Unsupported request", NS.sts);
        const ns = NS[service];
        const authorization = String(req.headers.authorization ?? "");
        requests.push({ service, action, params, authorization });
        if (!authorization.startsWith("AWS4-HMAC-SHA256 Credential=")) return fail("MissingAuthenticationToken", "Request is missing Authentication Token", ns);
        const queued = faults.get(action);
        if (queued && queued.length > 0) {
          const f = queued.shift()!;
          return fail(f.code, f.message, ns);
        }
        try {
          let result: string;
          if (service === "sts") {
            if (action === "AssumeRole") result = assumeRole(params);
            else if (action === "GetCallerIdentity") {
              result = `<GetCallerIdentityResult><Arn>arn:aws:iam::${callerAccount}:user/broker</Arn><UserId>AIDAJITBROKERTEST0001</UserId><Account>${callerAccount}</Account></GetCallerIdentityResult>`;
            } else throw new AwsFault("InvalidAction", `Could not find operation ${action} for version ${STS_VERSION}`);
          } else {
            result = iamAction(action, params);
          }
          send(200, `<${action}Response xmlns="${ns}">${result}<ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata></${action}Response>`);
        } catch (e) {
          if (e instanceof AwsFault) return fail(e.code, e.message, ns);
          return fail("ServiceFailure", (e as Error).message, ns);
        }
      })();
    });
  });

  function evaluateCondition(op: string, key: string, values: unknown, ctx: Record<string, string | number>): boolean {
    const actual = ctx[key.toLowerCase()];
    if (actual === undefined) return false;
    const list = (Array.isArray(values) ? values : [values]).map(String);
    switch (op) {
      case "StringEquals":
        return list.includes(String(actual));
      case "StringLike":
        return list.some((v) => globMatch(v, String(actual)));
      case "DateLessThan":
        return list.some((v) => Number(actual) < Date.parse(v));
      case "DateGreaterThan":
        return list.some((v) => Number(actual) > Date.parse(v));
      default:
        throw new Error(`the test server cannot evaluate condition operator ${op}`);
    }
  }

  return {
    url: server.url,
    account,
    callerAccount,
    roles,
    sessions,
    requests,
    /** Adds a role (`path` like "/team/"); returns it. */
    addRole(name: string, o: { maxSessionDuration?: number; externalId?: string; path?: string } = {}): FakeRole {
      const role: FakeRole = {
        name,
        arn: `arn:aws:iam::${account}:role${o.path ?? "/"}${name}`,
        roleId: `AROA${upperAlnum(17)}`,
        maxSessionDuration: o.maxSessionDuration ?? 43_200,
        ...(o.externalId !== undefined ? { externalId: o.externalId } : {}),
        policies: new Map(),
      };
      roles.set(name, role);
      return role;
    },
    /** The parsed inline policy, or null. */
    policy(roleName: string, policyName: string): { Version: string; Statement: Record<string, any>[] } | null {
      const doc = roles.get(roleName)?.policies.get(policyName);
      return doc === undefined ? null : JSON.parse(doc);
    },
    /** The next `times` calls of `action` fail with `code`. */
    fail(action: string, code: string, times = 1, message = `${code} (injected by the test)`) {
      const q = faults.get(action) ?? [];
      for (let i = 0; i < times; i++) q.push({ code, message });
      faults.set(action, q);
    },
    clearFaults() {
      faults.clear();
    },
    delay(action: string, ms: number) {
      delays.set(action, ms);
    },
    setPackedCapacity(bytes: number) {
      packedCapacity = bytes;
    },
    session(sessionName: string): IssuedSession {
      const s = sessions.find((x) => x.sessionName === sessionName);
      if (!s) throw new Error(`no session named ${sessionName}`);
      return s;
    },
    calls(action: string): RecordedRequest[] {
      return requests.filter((r) => r.action === action);
    },
    /**
     * Whether the role's inline policies deny every action to this session at `at` (default now):
     * some Deny statement on Action "*" and Resource "*" whose conditions all hold.
     */
    denies(s: IssuedSession, at = now()): boolean {
      const role = roles.get(s.roleName);
      if (!role) return false;
      const ctx: Record<string, string | number> = { "aws:userid": s.userId, "aws:tokenissuetime": s.issuedAt, "aws:currenttime": at };
      for (const text of role.policies.values()) {
        const doc = JSON.parse(text) as { Statement: unknown };
        const list = (Array.isArray(doc.Statement) ? doc.Statement : [doc.Statement]) as Record<string, any>[];
        for (const st of list) {
          if (st.Effect !== "Deny" || st.Action !== "*" || st.Resource !== "*") continue;
          const cond = (st.Condition ?? {}) as Record<string, Record<string, unknown>>;
          const holds = Object.entries(cond).every(([op, block]) => Object.entries(block).every(([k, v]) => evaluateCondition(op, k, v, ctx)));
          if (holds) return true;
        }
      }
      return false;
    },
    close: () => {
      // A delayed answer whose client gave up must not keep the test process alive (Jest's "worker
      // process has failed to exit gracefully").
      for (const t of pending) clearTimeout(t);
      pending.clear();
      return server.close();
    },
  };
}

export type AwsServer = Awaited<ReturnType<typeof startAwsServer>>;
