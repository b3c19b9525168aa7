import { describe, expect, it } from "vitest";
import { deviceMoveMessage, DeviceMoveRefused, parseDeviceMove, verifyDeviceMove, type DeviceMoveStatement } from "./device-move.ts";
import { generateIdentity, type Identity } from "./identity/index.ts";
import { tufKeyId, tufKeyJson } from "./tuf-key.ts";

const statement: DeviceMoveStatement = { deviceId: "dev_1", fromOrg: "org_a", toOrg: "org_b", toRoot: { version: 1, sha256: "ab".repeat(32) } };

function rootOf(keys: Identity[], threshold: number) {
  return {
    signed: {
      _type: "root",
      keys: Object.fromEntries(keys.map((k) => [tufKeyId(k.publicKey), tufKeyJson(k.publicKey)])),
      roles: { root: { keyids: keys.map((k) => tufKeyId(k.publicKey)), threshold } },
    },
    signatures: [],
  };
}

const sign = (s: DeviceMoveStatement, ...keys: Identity[]) => ({
  ...s,
  signatures: keys.map((k) => ({ keyid: tufKeyId(k.publicKey), sig: Buffer.from(k.sign(deviceMoveMessage(s))).toString("hex") })),
});

describe("device move endorsements", () => {
  const a = generateIdentity();
  const b = generateIdentity();
  const outsider = generateIdentity();

  it("accepts a move signed by the threshold of the trusted root's keys", () => {
    expect(() => verifyDeviceMove(sign(statement, a, b), rootOf([a, b], 2))).not.toThrow();
    expect(() => verifyDeviceMove(parseDeviceMove(JSON.stringify(sign(statement, a))), rootOf([a, b], 1))).not.toThrow();
  });

  it("refuses a move below the threshold, or signed twice by one key", () => {
    expect(() => verifyDeviceMove(sign(statement, a), rootOf([a, b], 2))).toThrow(/signed by 1 of the 2 root keys/);
    expect(() => verifyDeviceMove(sign(statement, a, a), rootOf([a, b], 2))).toThrow(DeviceMoveRefused);
  });

  it("refuses a move signed by a key the root does not name (a destination admin's, or the coordinator's)", () => {
    expect(() => verifyDeviceMove(sign(statement, outsider), rootOf([a], 1))).toThrow(/signed by 0 of the 1/);
  });

  it("refuses a signature carried over to another move: another destination root or device", () => {
    const signed = sign(statement, a);
    expect(() => verifyDeviceMove({ ...signed, toRoot: { version: 1, sha256: "cd".repeat(32) } }, rootOf([a], 1))).toThrow(DeviceMoveRefused);
    expect(() => verifyDeviceMove({ ...signed, deviceId: "dev_2" }, rootOf([a], 1))).toThrow(DeviceMoveRefused);
  });

  it("refuses malformed endorsements", () => {
    expect(() => parseDeviceMove("{")).toThrow(/not JSON/);
    expect(() => parseDeviceMove(JSON.stringify({ ...statement, signatures: [{ keyid: 1 }] }))).toThrow(/malformed/);
  });
});
