/**
 * The few pages the server renders itself (sign-in, refusals, the hand-over after a sign-in, the
 * dev issuer's sign-in page): static markup, every interpolated value escaped, no script, styled
 * by the console's own stylesheet. Everything else is the front end (web/console).
 */
export const escapeHtml = (s: string): string =>
  s.replace(/[&<>"'`=]/g, (c) => `&#${c.charCodeAt(0)};`);

/** The Content-Security-Policy of every console page: own scripts and styles only, no inline code. */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join("; ");

export const SECURITY_HEADERS: Record<string, string> = {
  "Content-Security-Policy": CONSOLE_CSP,
  "Referrer-Policy": "no-referrer",
  "X-Frame-Options": "DENY",
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Resource-Policy": "same-origin",
};

export function page(title: string, body: string, opts: { refreshTo?: string } = {}): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
${opts.refreshTo ? `<meta http-equiv="refresh" content="0;url=${escapeHtml(opts.refreshTo)}">` : ""}
<title>${escapeHtml(title)} · jitbroker console</title>
<link rel="stylesheet" href="/console/assets/app.css">
</head>
<body>
<main class="narrow" id="main">
<h1>${escapeHtml(title)}</h1>
${body}
</main>
</body>
</html>
`;
}

export const signInPage = (issuer: string, note?: string) =>
  page(
    "jitbroker console",
    `${note ? `<p class="note" role="status">${escapeHtml(note)}</p>` : ""}
<p>Operators sign in with their organisation's identity provider (${escapeHtml(issuer)}).</p>
<p><a class="button primary" href="/console/login">Sign in</a></p>`,
  );

export const refusalPage = (title: string, detail: string) =>
  page(title, `<p role="alert">${escapeHtml(detail)}</p>
<p>The console is for operators: people listed as <code>human</code> workloads of the broker's inventory whom the policies allow to read the broker's state.</p>
<p><a class="button" href="/console/login">Sign in as someone else</a></p>`);
