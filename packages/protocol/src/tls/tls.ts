import { X509Certificate, webcrypto } from "node:crypto";
import { isIP } from "node:net";
import { connect, type PeerCertificate } from "node:tls";
import type * as X509 from "@peculiar/x509";
import { keyPin, rawPublicKey, type Identity } from "../identity/index.ts";

/** A PEM certificate and the PEM (PKCS#8) private key that goes with it. */
export interface CertificatePair {
  certPem: string;
  keyPem: string;
}

/** Options for {@link selfSignedCertificate}. */
export interface SelfSignedOptions {
  /** DNS names and IP addresses written into subjectAltName. */
  hosts: string[];
  /** Validity from now, in days; default ten years (trust comes from the key pin, not expiry). */
  validDays?: number;
}

const DEFAULT_VALID_DAYS = 3650;
const DEFAULT_FETCH_TIMEOUT_MS = 10_000;
const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * A self-signed X.509 certificate whose key is the identity's own ed25519 key, so the
 * coordinator's TLS key and its node id are one key and a join string's pin covers both.
 * Node's TLS 1.3 serves it as is; clients trust it through {@link pinnedTlsOptions}.
 */
export async function selfSignedCertificate(identity: Identity, opts: SelfSignedOptions): Promise<CertificatePair> {
  const x509 = await loadX509();
  // KeyObject.toCryptoKey only exists from Node 23; go through PKCS#8 DER instead.
  const pkcs8 = identity.privateKey.export({ format: "der", type: "pkcs8" });
  const privateKey = await webcrypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, false, ["sign"]);
  const publicKey = await webcrypto.subtle.importKey("raw", identity.publicKey, { name: "Ed25519" }, true, ["verify"]);

  const now = Date.now();
  const names: X509.JsonGeneralName[] = opts.hosts.map((host) => {
    const bare = unbracket(host);
    return isIP(bare) ? { type: "ip", value: bare } : { type: "dns", value: host };
  });
  // No keyUsage: with digitalSignature alone OpenSSL no longer sees the certificate as its
  // own issuer (X509_check_issued wants keyCertSign), and keyCertSign would contradict cA=false.
  const extensions: X509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
    await x509.SubjectKeyIdentifierExtension.create(publicKey),
  ];
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names));

  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=${identity.id}`,
    keys: { privateKey, publicKey },
    signingAlgorithm: { name: "Ed25519" },
    // An hour of slack for clocks that run behind.
    notBefore: new Date(now - 60 * 60 * 1000),
    notAfter: new Date(now + (opts.validDays ?? DEFAULT_VALID_DAYS) * DAY_MS),
    extensions,
  });
  return {
    certPem: cert.toString("pem"),
    keyPem: identity.privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
  };
}

/**
 * Connects to an https URL, reads the certificate the server presents and returns it as PEM
 * if its ed25519 key has the given {@link keyPin}; throws otherwise. The handshake proves the
 * server holds that key, so the result can be trusted exactly via {@link pinnedTlsOptions}.
 * Costs one extra TLS handshake per call.
 */
export async function fetchPinnedCertificate(
  url: string,
  pin: string,
  timeoutMs: number = DEFAULT_FETCH_TIMEOUT_MS,
): Promise<string> {
  const cert = new X509Certificate(await fetchCertificate(url, timeoutMs));
  const got = keyPin(x509PublicKey(cert));
  if (got !== pin) {
    throw new Error(`coordinator certificate does not match the pinned key: expected ${pin}, got ${got}`);
  }
  return cert.toString();
}

/**
 * The certificate an https server presents, as PEM, unverified: for trust on first use, where
 * the caller derives a pin from it and verifies the server against that pin.
 */
export async function fetchCertificate(url: string, timeoutMs: number = DEFAULT_FETCH_TIMEOUT_MS): Promise<string> {
  const { protocol, hostname, port } = new URL(url);
  if (protocol !== "https:") throw new Error(`cannot fetch a certificate over ${protocol} (expected https:)`);
  const raw = await peerCertificate(unbracket(hostname), port === "" ? 443 : Number(port), timeoutMs);
  return new X509Certificate(raw).toString();
}

/**
 * TLS client options that trust exactly one certificate (from {@link fetchPinnedCertificate})
 * and skip the hostname check, which the key pin replaces. Spread into https/http2 options.
 */
export function pinnedTlsOptions(certPem: string): { ca: string[]; checkServerIdentity: () => undefined } {
  return { ca: [certPem], checkServerIdentity: () => undefined };
}

/** The raw 32-byte ed25519 public key of a PEM certificate; throws for any other key type. */
export function certificatePublicKey(certPem: string): Uint8Array {
  return x509PublicKey(new X509Certificate(certPem));
}

function x509PublicKey(cert: X509Certificate): Uint8Array {
  const type = cert.publicKey.asymmetricKeyType;
  if (type !== "ed25519") throw new Error(`certificate key is not an ed25519 key (${type ?? "unknown"})`);
  return rawPublicKey(cert.publicKey);
}

function peerCertificate(host: string, port: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host,
      port,
      // SNI must be a DNS name, never an IP address (RFC 6066 section 3).
      ...(isIP(host) ? {} : { servername: host }),
      rejectUnauthorized: false,
      ALPNProtocols: ["h2", "http/1.1"],
    });
    const timer = setTimeout(() => {
      socket.destroy(new Error(`timed out after ${timeoutMs} ms fetching the certificate of ${host}:${port}`));
    }, timeoutMs);
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      const cert: PeerCertificate = socket.getPeerCertificate(true);
      socket.destroy();
      // Node leaves `pubkey` unset for ed25519 keys; the DER in `raw` is always there.
      if (cert.raw === undefined || cert.raw.length === 0) reject(new Error(`${host}:${port} sent no certificate`));
      else resolve(cert.raw);
    });
    socket.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

function unbracket(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

let x509Loaded: Promise<typeof X509> | undefined;

/**
 * @peculiar/x509 needs Reflect metadata (through tsyringe) before it is evaluated, and
 * reflect-metadata is not a dependency; its classes take no constructor parameters, so a
 * small WeakMap store is all tsyringe reads. Loaded lazily so the shim comes first.
 */
function loadX509(): Promise<typeof X509> {
  x509Loaded ??= (async () => {
    installReflectMetadata();
    const x509 = await import("@peculiar/x509");
    x509.cryptoProvider.set(webcrypto);
    return x509;
  })();
  return x509Loaded;
}

function installReflectMetadata(): void {
  if ("getMetadata" in Reflect) return;
  const store = new WeakMap<object, Map<unknown, unknown>>();
  const own = (target: object): Map<unknown, unknown> | undefined => store.get(target);
  Object.assign(Reflect, {
    defineMetadata(key: unknown, value: unknown, target: object): void {
      let map = store.get(target);
      if (map === undefined) store.set(target, (map = new Map()));
      map.set(key, value);
    },
    getOwnMetadata: (key: unknown, target: object): unknown => own(target)?.get(key),
    hasOwnMetadata: (key: unknown, target: object): boolean => own(target)?.has(key) ?? false,
    getMetadata(key: unknown, target: object): unknown {
      for (let t: object | null = target; t !== null; t = Object.getPrototypeOf(t) as object | null) {
        const map = own(t);
        if (map?.has(key)) return map.get(key);
      }
      return undefined;
    },
  });
}
