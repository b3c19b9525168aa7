import { createServer, type Server } from "node:net";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { propertyRuns, propertyTimeout } from "@flotilla/protocol/testing";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { SshAgent, type AgentKey } from "./ssh-agent.ts";

const RUNS = 100;
const runs = propertyRuns(RUNS);
const dir = useTempDir("flotilla-sshagent-prop-");

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const sshString = (b: Uint8Array | string): Buffer => Buffer.concat([u32(Buffer.byteLength(b)), Buffer.from(b)]);
const frame = (payload: Buffer): Buffer => Buffer.concat([u32(payload.length), payload]);

const keyBlob = fc.oneof(
  fc.uint8Array({ minLength: 32, maxLength: 32 }).map((k) => Buffer.concat([sshString("ssh-ed25519"), sshString(k)])),
  fc.uint8Array({ maxLength: 40 }).map((k) => Buffer.concat([sshString("ssh-rsa"), sshString(k)])),
  fc.uint8Array({ maxLength: 12 }).map((b) => Buffer.from(b)),
);
const identitiesAnswer = fc
  .tuple(fc.array(fc.tuple(keyBlob, fc.string({ maxLength: 10 })), { maxLength: 4 }), fc.integer({ min: -2, max: 2 }))
  .map(([keys, skew]) =>
    Buffer.concat([Buffer.from([12]), u32(Math.max(0, keys.length + skew)), ...keys.flatMap(([blob, c]) => [sshString(blob), sshString(c)])]),
  );
const signResponse = fc
  .tuple(fc.constantFrom("ssh-ed25519", "rsa-sha2-512", ""), fc.uint8Array({ minLength: 0, maxLength: 70 }))
  .map(([alg, sig]) => Buffer.concat([Buffer.from([14]), sshString(Buffer.concat([sshString(alg), sshString(sig)]))]));

/** What a broken or hostile agent may answer: framed messages, valid or not, cut anywhere, or raw bytes. */
const reply = fc.oneof(
  fc.oneof(identitiesAnswer, signResponse, fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b))).map(frame),
  fc.tuple(fc.oneof(identitiesAnswer, signResponse).map(frame), fc.nat()).map(([f, cut]) => f.subarray(0, cut % (f.length + 1))),
  fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
  fc.constant(frame(Buffer.alloc(0))),
  fc.constant(u32(0xffffffff)),
);

let server: Server;
let answer: Buffer = Buffer.alloc(0);
let socketPath: string;

beforeAll(async () => {
  server = createServer((conn) => {
    conn.once("data", () => conn.end(answer));
    conn.on("error", () => {});
  });
});
afterAll(() => new Promise<void>((res) => server.close(() => res())));

/** Settles `p` within `ms`, or says it hung. */
function settle<T>(p: Promise<T>, ms = 2000): Promise<{ ok: T } | { err: unknown } | "hung"> {
  return Promise.race([
    p.then((ok) => ({ ok }), (err: unknown) => ({ err })),
    new Promise<"hung">((res) => setTimeout(() => res("hung"), ms).unref()),
  ]);
}

const someKey: AgentKey = { publicKey: new Uint8Array(32), comment: "k", blob: Buffer.concat([sshString("ssh-ed25519"), sshString(new Uint8Array(32))]) };

describe("ssh-agent client properties", () => {
  it(
    "answers whatever the agent sends with keys, a 64-byte signature or an Error, never a hang or a crash",
    async () => {
      socketPath = join(dir.path, "agent.sock");
      await new Promise<void>((res) => server.listen(socketPath, res));
      try {
        await fc.assert(
          fc.asyncProperty(reply, fc.boolean(), async (bytes, signing) => {
            answer = bytes;
            const agent = await SshAgent.open(socketPath);
            try {
              const got = await settle<Uint8Array | AgentKey[]>(signing ? agent.sign(someKey, Buffer.from("data")) : agent.ed25519Keys());
              expect(got).not.toBe("hung");
              if (got === "hung") return;
              if ("err" in got) {
                expect(got.err).toBeInstanceOf(Error);
                expect((got.err as Error).message).toMatch(/ssh-agent/);
              } else if (signing) {
                expect((got.ok as Uint8Array).length).toBe(64);
              } else {
                for (const k of got.ok as AgentKey[]) expect(k.publicKey.length).toBe(32);
              }
            } finally {
              agent.close();
            }
          }),
          // Found by this property: an empty message crashed the CLI from the socket's data handler.
          { ...runs, examples: [[frame(Buffer.alloc(0)), false]] },
        );
      } finally {
        await new Promise<void>((res) => server.close(() => res()));
      }
    },
    propertyTimeout(30_000, RUNS),
  );
});
