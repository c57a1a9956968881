/**
 * How `exchange` hands credentials over: shell `export` lines that bash can eval whatever the
 * values hold, and GitHub Actions file commands and masks.
 */
import { execFileSync } from "node:child_process";
import type { CredentialGrant } from "../../src/client/types";
import { credentialVars, envLines, envName, githubFileCommands, maskCommands, shellQuote, type ExportVar } from "../../src/cli/client/output";

const lease = { id: "l_abcdefghijklmnop", expires_at: "2030-01-01T00:00:00.000Z" } as CredentialGrant["lease"];
const grant = (credential: Record<string, unknown>): CredentialGrant => ({ lease, credential: credential as unknown as CredentialGrant["credential"] });

/** Evaluates the export lines in bash and prints each variable's value, NUL-separated. */
function evalInBash(lines: string, names: string[]): string[] {
  const script = `eval "$(cat)"; printf '%s\\0' ${names.map((n) => `"$${n}"`).join(" ")}`;
  return execFileSync("bash", ["-c", script], { input: lines, env: { PATH: process.env.PATH } }).toString("utf8").split("\0").slice(0, -1);
}

describe("shell export lines", () => {
  const hostile = [
    "plain",
    "it's",
    `double "quotes" and 'single' ones`,
    "spaces   and\ttabs",
    "line one\nline two\n",
    "$(touch /tmp/jitbroker-pwned) `touch /tmp/jitbroker-pwned` $HOME ${PATH}",
    "back\\slash\\",
    "'",
    "''",
    "",
    "ünïcödé ✓",
    "; rm -rf / #",
  ];

  it("round-trips every value through bash eval exactly", () => {
    const vars: ExportVar[] = hostile.map((value, i) => ({ name: `V${i}`, value, secret: true }));
    expect(evalInBash(envLines(vars), vars.map((v) => v.name))).toEqual(hostile);
  });

  it("quotes with single quotes only", () => {
    expect(shellQuote("a'b")).toBe(`'a'\\''b'`);
    expect(envLines([{ name: "X", value: "$y", secret: false }])).toBe("export X='$y'\n");
  });
});

describe("credential variables", () => {
  it("jwt: JITBROKER_TOKEN plus the lease id and expiry", () => {
    expect(credentialVars(grant({ type: "jwt", token: "eyJ.x.y", expires_at: lease.expires_at }))).toEqual([
      { name: "JITBROKER_TOKEN", value: "eyJ.x.y", secret: true },
      { name: "JITBROKER_LEASE_ID", value: lease.id, secret: false },
      { name: "JITBROKER_EXPIRES_AT", value: lease.expires_at, secret: false },
    ]);
  });

  it("aws: the three variables the AWS SDKs and CLI read, and the expiration", () => {
    const vars = credentialVars(grant({ type: "aws", access_key_id: "ASIAX", secret_access_key: "s3cr3t", session_token: "tok", expiration: "2030-01-01T00:00:00Z" }));
    expect(vars.map((v) => [v.name, v.value, v.secret])).toEqual([
      ["AWS_ACCESS_KEY_ID", "ASIAX", true],
      ["AWS_SECRET_ACCESS_KEY", "s3cr3t", true],
      ["AWS_SESSION_TOKEN", "tok", true],
      ["AWS_CREDENTIAL_EXPIRATION", "2030-01-01T00:00:00Z", false],
      ["JITBROKER_LEASE_ID", lease.id, false],
      ["JITBROKER_EXPIRES_AT", lease.expires_at, false],
    ]);
  });

  it("vault: VAULT_TOKEN for a child token (token roles)", () => {
    expect(credentialVars(grant({ type: "vault", data: { token: "hvs.abc", accessor: "acc", policies: ["kv-read"] }, lease_duration: 300 }))).toEqual([
      { name: "VAULT_TOKEN", value: "hvs.abc", secret: true },
      { name: "JITBROKER_LEASE_ID", value: lease.id, secret: false },
      { name: "JITBROKER_EXPIRES_AT", value: lease.expires_at, secret: false },
    ]);
    // A dynamic secret that happens to have a `token` field (it has a Vault lease) keeps its fields.
    expect(credentialVars(grant({ type: "vault", data: { token: "c0ffee", accessor: "x" }, lease_id: "consul/creds/r/abc", lease_duration: 300 })).map((v) => v.name)).toEqual([
      "JITBROKER_SECRET_TOKEN",
      "JITBROKER_SECRET_ACCESSOR",
      "JITBROKER_LEASE_ID",
      "JITBROKER_EXPIRES_AT",
    ]);
  });

  it("vault: a dynamic secret's fields as JITBROKER_SECRET_<FIELD>, all secret", () => {
    const vars = credentialVars(grant({ type: "vault", data: { username: "v-role-x", password: "p@ss'word", "db-host": "h", "2fa": 1, nested: { a: 1 } }, lease_id: "database/creds/ro/x", lease_duration: 600 }));
    expect(vars.map((v) => [v.name, v.value, v.secret])).toEqual([
      ["JITBROKER_SECRET_USERNAME", "v-role-x", true],
      ["JITBROKER_SECRET_PASSWORD", "p@ss'word", true],
      ["JITBROKER_SECRET_DB_HOST", "h", true],
      ["JITBROKER_SECRET_2FA", "1", true],
      ["JITBROKER_SECRET_NESTED", '{"a":1}', true],
      ["JITBROKER_LEASE_ID", lease.id, false],
      ["JITBROKER_EXPIRES_AT", lease.expires_at, false],
    ]);
    expect(envName("a.b-c d")).toBeNull();
    expect(envName("db-host")).toBe("JITBROKER_SECRET_DB_HOST");
  });

  it("--format env can set any variable: a vault field named path or ld_preload never replaces PATH or LD_PRELOAD (issue 13, finding 5)", () => {
    const notes: string[] = [];
    const data = { path: "/tmp/evil", ld_preload: "/tmp/evil.so", "bash_func%%": "() { :; }", "a\u001b]52;c;b3duZWQ=\u0007": "clip", "x.y": "1", password: "p" };
    const vars = credentialVars(grant({ type: "vault", data, lease_id: "database/creds/ro/x", lease_duration: 600 }), (n) => notes.push(n));
    const names = vars.map((v) => v.name);
    expect(names).toEqual(["JITBROKER_SECRET_PATH", "JITBROKER_SECRET_LD_PRELOAD", "JITBROKER_SECRET_PASSWORD", "JITBROKER_LEASE_ID", "JITBROKER_EXPIRES_AT"]);
    // The three fields with other characters are skipped, each with a note.
    expect(notes).toHaveLength(3);
    for (const n of notes) expect(n).not.toMatch(/[\u0000-\u001f\u007f]/);
    expect(notes.join("\n")).toContain("\\x1b]52");
  });

  it("refuses what cannot become an environment", () => {
    expect(() => credentialVars(grant({ type: "vault", data: { "a-b": "1", a_b: "2" } }))).toThrow("two credential fields map to the environment variable JITBROKER_SECRET_A_B");
    expect(() => credentialVars(grant({ type: "vault", data: { "a b": "1" } }))).toThrow("no field of the vault secret can be exported");
    expect(() => credentialVars(grant({ type: "jwt", token: "a\0b" }))).toThrow("NUL byte");
    expect(() => credentialVars(grant({ type: "ssh", key: "k" }))).toThrow('credential type "ssh" has no environment form');
    expect(() => credentialVars(grant({ type: "vault", data: {} }))).toThrow("no data fields");
  });
});

describe("GitHub Actions", () => {
  it("masks every secret value, escaped like @actions/core, multi-line values also line by line", () => {
    const out = maskCommands([
      { name: "A", value: "tok%en", secret: true },
      { name: "B", value: "not secret", secret: false },
      { name: "C", value: "line1\nline2", secret: true },
    ]);
    expect(out).toBe("::add-mask::tok%25en\n::add-mask::line1%0Aline2\n::add-mask::line1\n::add-mask::line2\n");
  });

  it("writes NAME<<DELIMITER blocks with a random delimiter that appears in no value", () => {
    const vars: ExportVar[] = [
      { name: "A", value: "one", secret: true },
      { name: "B", value: "multi\nline\nghadelimiter_1", secret: true },
    ];
    const seq = ["1", "2", "3"];
    const text = githubFileCommands(vars, () => seq.shift()!);
    expect(text).toBe("A<<ghadelimiter_1\none\nghadelimiter_1\nB<<ghadelimiter_2\nmulti\nline\nghadelimiter_1\nghadelimiter_2\n");
    // With the real random delimiter: 128 bits, different for every variable.
    const real = githubFileCommands(vars);
    const delimiters = [...real.matchAll(/^[A-Z]+<<(ghadelimiter_[0-9a-f]{32})$/gm)].map((m) => m[1]);
    expect(delimiters).toHaveLength(2);
    expect(new Set(delimiters).size).toBe(2);
  });
});
