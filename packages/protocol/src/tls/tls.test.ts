import { X509Certificate } from "node:crypto";
import http2 from "node:http2";
import https from "node:https";
import type { AddressInfo } from "node:net";
import tls from "node:tls";
import { afterEach, describe, expect, it } from "vitest";
import { generateIdentity, keyPin } from "../identity/index.ts";
import { certificatePublicKey, fetchPinnedCertificate, pinnedTlsOptions, selfSignedCertificate } from "./tls.ts";
import { h2Get } from "../testing.ts";

const servers: { close(): void }[] = [];

afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** An HTTP/2 server (HTTP/1.1 allowed) with the given certificate, answering "ok". */
async function serve(pair: { certPem: string; keyPem: string }): Promise<string> {
  const server = http2.createSecureServer({ allowHTTP1: true, cert: pair.certPem, key: pair.keyPem }, (_req, res) => {
    res.end("ok");
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => sessions.add(s));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  servers.push({
    close: () => {
      for (const s of sessions) s.destroy();
      server.close();
    },
  });
  return `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function httpsGet(url: string, options: https.RequestOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ...options, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve(body));
    });
    req.on("error", reject);
  });
}


describe("selfSignedCertificate", () => {
  it("makes a certificate whose key is the identity's key", async () => {
    const identity = generateIdentity();
    const { certPem } = await selfSignedCertificate(identity, { hosts: ["coord.example", "10.0.0.1", "::1"] });
    expect(certificatePublicKey(certPem)).toEqual(identity.publicKey);
    const cert = new X509Certificate(certPem);
    expect(cert.subjectAltName).toContain("DNS:coord.example");
    expect(cert.subjectAltName).toContain("IP Address:10.0.0.1");
    expect(cert.checkIssued(cert)).toBe(true);
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(new Date(cert.validTo).getTime()).toBeGreaterThan(Date.now() + 3000 * 24 * 3600 * 1000);
  });

  it("honours validDays", async () => {
    const { certPem } = await selfSignedCertificate(generateIdentity(), { hosts: [], validDays: 2 });
    const validTo = new Date(new X509Certificate(certPem).validTo).getTime();
    expect(validTo).toBeLessThan(Date.now() + 3 * 24 * 3600 * 1000);
  });

  it("is served and accepted by TLS 1.3", async () => {
    const pair = await selfSignedCertificate(generateIdentity(), { hosts: ["localhost", "127.0.0.1"] });
    const server = tls.createServer({ cert: pair.certPem, key: pair.keyPem, minVersion: "TLSv1.3" }, (s) => s.end("hi"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    servers.push(server);
    const { port } = server.address() as AddressInfo;
    const result = await new Promise<{ protocol: string | null; authorized: boolean }>((resolve, reject) => {
      const socket = tls.connect({ host: "127.0.0.1", port, servername: "localhost", ca: [pair.certPem] }, () => {
        resolve({ protocol: socket.getProtocol(), authorized: socket.authorized });
        socket.destroy();
      });
      socket.on("error", reject);
    });
    expect(result).toEqual({ protocol: "TLSv1.3", authorized: true });
  });
});

describe("fetchPinnedCertificate", () => {
  it("returns the certificate when its key matches the pin", async () => {
    const identity = generateIdentity();
    const pair = await selfSignedCertificate(identity, { hosts: ["127.0.0.1"] });
    const url = await serve(pair);
    const certPem = await fetchPinnedCertificate(url, keyPin(identity.publicKey));
    expect(new X509Certificate(certPem).fingerprint256).toBe(new X509Certificate(pair.certPem).fingerprint256);
  });

  it("refuses a certificate made from another key", async () => {
    const pair = await selfSignedCertificate(generateIdentity(), { hosts: ["127.0.0.1"] });
    const url = await serve(pair);
    const wrong = keyPin(generateIdentity().publicKey);
    await expect(fetchPinnedCertificate(url, wrong)).rejects.toThrow(
      `coordinator certificate does not match the pinned key: expected ${wrong}, got`,
    );
  });

  it("refuses a plain http URL", async () => {
    await expect(fetchPinnedCertificate("http://127.0.0.1:1", "x")).rejects.toThrow(/expected https/);
  });
});

describe("pinnedTlsOptions", () => {
  it("lets https and http2 requests through to the pinned server, whatever its host name", async () => {
    const identity = generateIdentity();
    const url = await serve(await selfSignedCertificate(identity, { hosts: ["coord.example"] }));
    const options = pinnedTlsOptions(await fetchPinnedCertificate(url, keyPin(identity.publicKey)));
    expect(await httpsGet(url, options)).toBe("ok");
    expect(await h2Get(url, options)).toBe("ok");
  });

  it("refuses a server whose certificate is not the pinned one", async () => {
    const url = await serve(await selfSignedCertificate(generateIdentity(), { hosts: ["127.0.0.1"] }));
    const other = await selfSignedCertificate(generateIdentity(), { hosts: ["127.0.0.1"] });
    const options = pinnedTlsOptions(other.certPem);
    await expect(httpsGet(url, options)).rejects.toThrow();
    await expect(h2Get(url, options)).rejects.toThrow();
  });
});
