import { compilePolicies, createPolicyEngine, type DecisionRequest, type PolicyEngine } from "./engine";
import { memoizeDecisions } from "./memo";

const set = (text: string) => compilePolicies([{ path: "/p/p.cedar", text }]);

const request = (over: { principal?: Partial<DecisionRequest["principal"]>; context?: Partial<DecisionRequest["context"]>; task?: Partial<DecisionRequest["context"]["task"]> } = {}): DecisionRequest => ({
  principal: { id: "agent-1", kind: "agent", owner: "o", issuer: "idp", subject: "s", claims: {}, ...over.principal },
  action: "request",
  resource: { name: "read", backend: "jwt", labels: { access: "read" } },
  context: { task: { id: "t-1", intent: "", tool: "", destination: "", sensitivity: "", ...over.task }, ttl_seconds: 300, approved: false, ...over.context },
});

/** An engine that counts the decisions it takes. */
function counting(engine: PolicyEngine): PolicyEngine & { calls: number } {
  const e = {
    calls: 0,
    decide: (r: DecisionRequest) => {
      e.calls++;
      return engine.decide(r);
    },
    set: () => engine.set(),
    replace: (s: Parameters<PolicyEngine["replace"]>[0]) => engine.replace(s),
  };
  return e;
}

describe("memoizeDecisions", () => {
  const PERMIT_AGENTS = '@id("agents") permit (principal, action, resource) when { principal.kind == "agent" };';

  it("decides once for requests that differ only in what no policy reads", () => {
    const engine = counting(createPolicyEngine(set(PERMIT_AGENTS)));
    const memo = memoizeDecisions(engine);
    for (let i = 0; i < 100; i++) expect(memo.decide(request({ task: { id: `t-${i}` } })).decision).toBe("allow");
    expect(engine.calls).toBe(1);
    expect(memo.stats()).toEqual({ decisions: 100, evaluated: 1 });
  });

  it("a decision taken under the old policy set is never reused after the set is replaced", () => {
    const engine = counting(createPolicyEngine(set(PERMIT_AGENTS)));
    const memo = memoizeDecisions(engine);
    expect(memo.decide(request()).decision).toBe("allow");
    engine.replace(set(`${PERMIT_AGENTS}\n@id("stop") forbid (principal, action, resource);`));
    const d = memo.decide(request());
    expect(d).toMatchObject({ decision: "deny", policyIds: ["stop"], policyHash: engine.set().hash });
    expect(engine.calls).toBe(2);
  });

  it("a request the engine cannot represent is denied on its own and poisons nothing", () => {
    const engine = counting(createPolicyEngine(set(PERMIT_AGENTS)));
    const memo = memoizeDecisions(engine);
    // A hostile value from Redis in a context field no policy reads: Cedar cannot take NaN.
    const hostile = request({ context: { delegation: { depth: Number.NaN } } });
    expect(memo.decide(request()).decision).toBe("allow");
    expect(memo.decide(hostile)).toMatchObject({ decision: "deny", errors: [expect.stringMatching(/not an integer Cedar can represent/)] });
    expect(memo.decide(hostile).decision).toBe("deny");
    expect(memo.decide(request()).decision).toBe("allow");
  });

  it("a principal attribute of the wrong type is decided alone (never keyed)", () => {
    const engine = counting(createPolicyEngine(set(PERMIT_AGENTS)));
    const memo = memoizeDecisions(engine);
    const odd = request({ principal: { owner: undefined as unknown as string } });
    memo.decide(odd);
    memo.decide(odd);
    expect(engine.calls).toBe(2);
  });

  it("a caller that edits the decision it got cannot change what the memo answers next", () => {
    const memo = memoizeDecisions(createPolicyEngine(set(PERMIT_AGENTS)));
    const first = memo.decide(request());
    first.policyIds.push("forged");
    first.errors.push("x");
    first.decision = "deny";
    expect(memo.decide(request())).toMatchObject({ decision: "allow", policyIds: ["agents"], errors: [] });
  });

  it("is bounded: the least recently used decision is dropped, answers stay right", () => {
    const engine = counting(createPolicyEngine(set('@id("read") permit (principal, action, resource) when { context.task.intent == "read" };')));
    const memo = memoizeDecisions(engine, { maxEntries: 2 });
    const intents = ["read", "write", "read", "other", "write", "read"];
    expect(intents.map((intent) => memo.decide(request({ task: { intent } })).decision)).toEqual(["allow", "deny", "allow", "deny", "deny", "allow"]);
    // read, write, (read hit), other drops write, write drops read, read drops other.
    expect(engine.calls).toBe(5);
  });

  it.each<[string, Parameters<typeof request>[0]]>([
    ["another workload id", { principal: { id: "agent-2" } }],
    ["another kind", { principal: { kind: "ci" } }],
    ["another owner", { principal: { owner: "p" } }],
    ["another issuer", { principal: { issuer: "idp-2" } }],
    ["another subject", { principal: { subject: "s2" } }],
    ["another claim value", { principal: { claims: { ref: "refs/heads/dev" } } }],
    ["another read task field", { task: { intent: "export" } }],
    ["another TTL (read by the policy)", { context: { ttl_seconds: 301 } }],
  ])("a decision is never shared with a request that has %s", (_name, over) => {
    const engine = counting(
      createPolicyEngine(
        set(`${PERMIT_AGENTS}
@id("one") forbid (principal, action, resource) when {
  principal == Workload::"agent-2" || principal.kind == "ci" || principal.owner == "p" || principal.issuer == "idp-2" ||
  principal.subject == "s2" || (principal.claims has ref && principal.claims.ref == "refs/heads/dev") ||
  context.task.intent == "export" || context.ttl_seconds == 301 };`),
      ),
    );
    const memo = memoizeDecisions(engine);
    expect(memo.decide(request()).decision).toBe("allow");
    expect(memo.decide(request(over))).toMatchObject({ decision: "deny", policyIds: ["one"] });
    expect(memo.decide(request()).decision).toBe("allow");
  });

  it("a decision is never shared across roles (name, backend or labels)", () => {
    const memo = memoizeDecisions(createPolicyEngine(set('@id("r") permit (principal, action, resource == Role::"read") when { resource.backend == "jwt" && resource.labels.access == "read" };')));
    const base = request();
    expect(memo.decide(base).decision).toBe("allow");
    expect(memo.decide({ ...base, resource: { name: "read2", backend: "jwt", labels: { access: "read" } } }).decision).toBe("deny");
    expect(memo.decide({ ...base, resource: { name: "read", backend: "vault", labels: { access: "read" } } }).decision).toBe("deny");
    expect(memo.decide({ ...base, resource: { name: "read", backend: "jwt", labels: { access: "write" } } }).decision).toBe("deny");
    expect(memo.decide({ ...base, action: "delegate" }).decision).toBe("allow");
    expect(memo.decide(base).decision).toBe("allow");
  });
});
