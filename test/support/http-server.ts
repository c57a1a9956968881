import http from "node:http";
import type { AddressInfo } from "node:net";

/** A local HTTP server on 127.0.0.1 with a handler, recording every request path in `hits`. */
export async function startRecordingServer(handler: (req: http.IncomingMessage, res: http.ServerResponse, url: string) => void) {
  const hits: string[] = [];
  let url = "";
  const server = http.createServer((req, res) => {
    hits.push(req.url ?? "");
    handler(req, res, url);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    hits,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
