import { createLogger, withoutRedaction } from "./logger";

const capture = () => {
  const lines: Record<string, unknown>[] = [];
  return { lines, destination: { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) } };
};

describe("logger", () => {
  it("redacts secret-named fields (the safety net), also after an unredacted child was made from it", () => {
    const c = capture();
    const log = createLogger({ level: "info", destination: c.destination });
    const plain = withoutRedaction(log);
    plain.info({ request_id: "r1", status: 201 }, "request");
    log.info({ token: "eyJsecret", req: { headers: { authorization: "Bearer eyJsecret" } }, nested: { client_secret: "s3cret" } }, "x");
    expect(JSON.stringify(c.lines[1])).not.toMatch(/eyJsecret|s3cret/);
    expect(c.lines[0]).toMatchObject({ request_id: "r1", status: 201, msg: "request", name: "jitbroker" });
  });
});
