/** Helpers for tests across packages; not part of the runtime surface (`@flotilla/protocol/testing`). */
import http2 from "node:http2";

/** GETs `/` over HTTP/2 (h2c for http://, h2 for https://) and resolves with the body. */
export function h2Get(url: string, options: http2.SecureClientSessionOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url, options);
    session.on("error", reject);
    const stream = session.request({ ":path": "/" });
    let body = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => (body += chunk));
    stream.on("end", () => {
      session.close();
      resolve(body);
    });
    stream.on("error", reject);
  });
}
