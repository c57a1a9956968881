/**
 * Where a workload token comes from. A source is asked again before every broker call, so a
 * rotated token (a Kubernetes projected token file, a CI provider's short-lived token) is always
 * the current one. Errors name the source, never the token.
 */
import { readFile } from "node:fs/promises";
import { TokenSourceError } from "./errors";

export interface TokenProvider {
  /** The current token. */
  get(): Promise<string>;
  /** Forget a cached token (the broker said it expired); the next `get` fetches a fresh one. */
  invalidate?(): void;
  /** False for a fixed string: asking again cannot give a different token. */
  readonly refreshable: boolean;
}

/**
 * A token, or where to read it: a function (called before each request; cache inside it if
 * fetching is costly), `{file}` (re-read each time), `{env}` (an environment variable), or a
 * TokenProvider such as `githubActionsToken()`.
 */
export type TokenOption = string | (() => string | Promise<string>) | { file: string } | { env: string } | TokenProvider;

const clean = (token: string, where: string): string => {
  const t = token.trim();
  if (t === "") throw new TokenSourceError(`${where} is empty`);
  if (/\s/.test(t)) throw new TokenSourceError(`${where} does not hold a single token (it contains whitespace)`);
  return t;
};

/** Reads the token from a file on every call (Kubernetes projected service account tokens rotate). */
export function fileToken(file: string): TokenProvider {
  return {
    refreshable: true,
    async get() {
      let text: string;
      try {
        text = await readFile(file, "utf8");
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        throw new TokenSourceError(`cannot read the token file ${file}: ${code === "ENOENT" ? "no such file" : (code ?? (e as Error).message)}`, "config", { cause: e });
      }
      return clean(text, `token file ${file}`);
    },
  };
}

/** Reads the token from an environment variable on every call (GitLab CI `id_tokens`, dev shells). */
export function envToken(name: string, env: NodeJS.ProcessEnv = process.env): TokenProvider {
  return {
    refreshable: true,
    async get() {
      const v = env[name];
      if (v === undefined || v === "") throw new TokenSourceError(`environment variable ${name} is not set`);
      return clean(v, `environment variable ${name}`);
    },
  };
}

/** The `exp` of a JWT in ms (undefined if it cannot be read). Not a verification: a cache hint. */
function expiryMs(jwt: string): number | undefined {
  try {
    const payload = JSON.parse(Buffer.from(jwt.split(".")[1] ?? "", "base64url").toString("utf8")) as { exp?: unknown };
    return typeof payload.exp === "number" ? payload.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

export interface GitHubActionsTokenOptions {
  /** The `aud` the token is minted for: the broker's `server.audience`. Default "jitbroker". */
  audience?: string;
  env?: NodeJS.ProcessEnv;
  fetch?: typeof fetch;
  /** Reuse a token until this long before its `exp`. Default 60 s. */
  refreshBeforeMs?: number;
  timeoutMs?: number;
}

/**
 * The job's OIDC token from GitHub Actions, obtained the way `@actions/core` getIDToken does:
 * GET `$ACTIONS_ID_TOKEN_REQUEST_URL&audience=<aud>` with `Authorization: Bearer
 * $ACTIONS_ID_TOKEN_REQUEST_TOKEN`, answer `{"value": "<jwt>"}`. The job needs
 * `permissions: id-token: write`, otherwise the runner does not set these variables.
 */
export function githubActionsToken(opts: GitHubActionsTokenOptions = {}): TokenProvider {
  const env = opts.env ?? process.env;
  const audience = opts.audience ?? "jitbroker";
  const doFetch = opts.fetch ?? fetch;
  const refreshBefore = opts.refreshBeforeMs ?? 60_000;
  let cached: { token: string; exp: number } | null = null;
  return {
    refreshable: true,
    invalidate() {
      cached = null;
    },
    async get() {
      if (cached && cached.exp - refreshBefore > Date.now()) return cached.token;
      const base = env.ACTIONS_ID_TOKEN_REQUEST_URL;
      const requestToken = env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
      if (!base || !requestToken) {
        throw new TokenSourceError(
          "ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set: run inside GitHub Actions with `permissions: id-token: write`",
        );
      }
      // As @actions/core: the runner's URL already has a query (api-version), the audience is appended.
      const url = `${base}${base.includes("?") ? "&" : "?"}audience=${encodeURIComponent(audience)}`;
      let res: Response;
      try {
        res = await doFetch(url, {
          headers: { authorization: `Bearer ${requestToken}`, accept: "application/json" },
          signal: AbortSignal.timeout(opts.timeoutMs ?? 30_000),
        });
      } catch (e) {
        const cause = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).name;
        throw new TokenSourceError(`cannot reach the GitHub Actions token endpoint: ${cause}`, "unavailable", { cause: e });
      }
      const text = await res.text().catch(() => "");
      if (!res.ok) {
        throw new TokenSourceError(`the GitHub Actions token endpoint answered HTTP ${res.status}`, res.status >= 500 || res.status === 429 ? "unavailable" : "refused");
      }
      let value: unknown;
      try {
        value = (JSON.parse(text) as { value?: unknown }).value;
      } catch {
        value = undefined;
      }
      if (typeof value !== "string" || value === "") throw new TokenSourceError("the GitHub Actions token endpoint answered without a token (no \"value\")", "unavailable");
      const token = clean(value, "the GitHub Actions ID token");
      const exp = expiryMs(token);
      cached = exp === undefined ? null : { token, exp };
      return token;
    },
  };
}

export function tokenProvider(opt: TokenOption): TokenProvider {
  if (typeof opt === "string") {
    const t = clean(opt, "the token");
    return { refreshable: false, get: async () => t };
  }
  if (typeof opt === "function") {
    return {
      refreshable: true,
      async get() {
        let v: unknown;
        try {
          v = await opt();
        } catch (e) {
          throw new TokenSourceError(`the token function failed: ${(e as Error).message ?? String(e)}`, "unavailable", { cause: e });
        }
        if (typeof v !== "string") throw new TokenSourceError("the token function did not return a string");
        return clean(v, "the token function's result");
      },
    };
  }
  if ("get" in opt && typeof opt.get === "function") return opt;
  if ("file" in opt && typeof opt.file === "string") return fileToken(opt.file);
  if ("env" in opt && typeof opt.env === "string") return envToken(opt.env);
  throw new TokenSourceError("token: give a string, a function, {file}, {env} or a token provider");
}
