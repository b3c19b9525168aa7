import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ExitError } from "../errors.ts";
import { pinNixKeys, pinnedNixKeys, releaseNixKeys, unpinNixKey } from "./trusted-keys.ts";

const key = (name: string, fill: number) => `${name}:${Buffer.alloc(32, fill).toString("base64")}`;
const [A, B, C] = [key("a", 1), key("b", 2), key("c", 3)];

let home: string;
beforeEach(async () => {
  home = await mkdtemp(join(tmpdir(), "flotilla-nixkeys-"));
});
afterEach(async () => {
  await rm(home, { recursive: true, force: true });
});

describe("the Nix keys an admin accepted", () => {
  it("accepts the coordinator's list on first use and says so, then refuses a list with a key not accepted", async () => {
    const target = { home, coordinator: "https://coord.example:7700" };
    const said: string[] = [];
    expect(await releaseNixKeys(target, [A], (t) => said.push(t))).toEqual([A]);
    expect(said.join("")).toMatch(/^accepted the organization's Nix keys on first use .*: a:/);
    expect(await pinnedNixKeys(target)).toEqual([A]);

    const refused = await releaseNixKeys(target, [A, B], () => {}).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ExitError);
    expect((refused as Error).message).toBe(`the coordinator lists Nix key ${B} that you have not accepted; if it is your organization's, accept it with \`flotilla nix-key trust ${B}\``);
    // A key of the same name with other key material is another key.
    await expect(releaseNixKeys(target, [key("a", 9)], () => {})).rejects.toThrow(/have not accepted/);

    await pinNixKeys(target, [B]);
    expect(await releaseNixKeys(target, [B, A], () => {})).toEqual([B, A]);
    // Accepted keys the organization no longer lists are left out; none left is an error.
    expect(await releaseNixKeys(target, [B], () => {})).toEqual([B]);
    await unpinNixKey(target, "b");
    await expect(releaseNixKeys(target, [C], () => {})).rejects.toThrow(/have not accepted/);
    await pinNixKeys(target, [C]);
    await unpinNixKey(target, "c");
    await expect(releaseNixKeys(target, [], () => {})).rejects.toThrow(/none of the Nix keys you accepted/);
  });

  it("keeps one list per coordinator and organization, and refuses what is not a public key", async () => {
    await pinNixKeys({ home, coordinator: "https://one.example:7700" }, [A]);
    await pinNixKeys({ home, coordinator: "https://one.example:7700", org: "other" }, [B]);
    expect(await pinnedNixKeys({ home, coordinator: "https://one.example:7700" })).toEqual([A]);
    expect(await pinnedNixKeys({ home, coordinator: "https://one.example:7700", org: "other" })).toEqual([B]);
    expect(await pinnedNixKeys({ home, coordinator: "https://two.example:7700" })).toBeUndefined();
    expect(await readdir(join(home, "nix-keys"))).toHaveLength(2);
    await expect(pinNixKeys({ home, coordinator: "https://one.example:7700" }, [`a:${Buffer.alloc(64).toString("base64")}`])).rejects.toThrow(/not a Nix public key/);
  });
});
