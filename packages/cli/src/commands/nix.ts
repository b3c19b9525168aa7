import { readFile } from "node:fs/promises";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import { adminv1 } from "@flotilla/protocol";
import { serviceClient, type AdminTarget } from "../admin/client.ts";
import { UsageError } from "../errors.ts";
import { nixCacheAccess, pushToNixCache } from "../nix/cache.ts";
import { NIX_PUBLIC_KEY, pinNixKeys, pinnedNixKeys, unpinNixKey } from "../nix/trusted-keys.ts";
import { json } from "../output.ts";
import type { Run } from "../run.ts";

/** A key given as `name:base64`, or the path of a file holding one (keeps secrets out of `ps`). */
async function keyArg(text: string): Promise<string> {
  if (/^[A-Za-z0-9._-]+:[A-Za-z0-9+/]+={0,2}$/.test(text)) return text;
  try {
    return (await readFile(text, "utf8")).trim();
  } catch {
    throw new UsageError(`${JSON.stringify(text)} is neither a Nix key name:base64 nor a readable file`);
  }
}

/** The public half of a key given as `name:base64` (secret: 64 bytes, seed then public key; public: 32). */
function publicHalf(key: string): string {
  const i = key.indexOf(":");
  const raw = Buffer.from(key.slice(i + 1), "base64");
  if (i <= 0 || (raw.length !== 32 && raw.length !== 64)) throw new UsageError("a Nix key is name:base64 of 32 (public) or 64 (secret) bytes");
  return `${key.slice(0, i)}:${raw.subarray(raw.length - 32).toString("base64")}`;
}

/** nix-key: the organization's Nix signing keys, which sign the paths in its binary cache. */
export function registerNixCommands(program: Command, target: () => AdminTarget, run: Run): void {
  const client = () => serviceClient(target(), adminv1.NixService);
  const nixKey = program.command("nix-key").description("the organization's Nix signing keys (binary cache at /nix/<org>/)");
  nixKey
    .command("create <name>")
    .description("generate a signing key on the coordinator; prints its public key (name:base64)")
    .action((name: string) =>
      run(async (out) => {
        const { key } = await (await client()).createNixKey({ name });
        // The key this admin just made is one it trusts for its NixOS releases.
        if (key?.publicKey) await pinNixKeys(target(), [key.publicKey]);
        out(`${key?.publicKey}\n`);
      }),
    );
  nixKey
    .command("import <key>")
    .description("import a key made with nix-store --generate-binary-cache-key: the secret key (the coordinator signs uploads) or the public key (uploads must come signed); a name:base64 string or a file")
    .action((key: string) =>
      run(async (out) => {
        const text = await keyArg(key);
        const res = await (await client()).importNixKey({ key: text });
        // Pinned as computed here from what the admin gave, not as the coordinator echoes it.
        const mine = publicHalf(text);
        if (res.key?.publicKey !== mine) throw new Error(`the coordinator answered with key ${res.key?.publicKey ?? "(none)"}, not the imported ${mine}`);
        await pinNixKeys(target(), [mine]);
        out(`${res.key?.publicKey}${res.key?.canSign ? "" : " (public only: uploads must be signed by its secret key)"}\n`);
      }),
    );
  nixKey
    .command("trust <key>")
    .description("accept a public key (name:base64, or a file) as the organization's for your NixOS releases, e.g. one another admin created; `release create --nixos` refuses keys you have not accepted")
    .action((key: string) =>
      run(async (out) => {
        const text = publicHalf(await keyArg(key));
        if (!NIX_PUBLIC_KEY.test(text)) throw new UsageError(`${JSON.stringify(text.slice(0, 80))} is not a Nix public key name:base64`);
        await pinNixKeys(target(), [text]);
        out(`accepted Nix key ${text}\n`);
      }),
    );
  nixKey
    .command("ls")
    .description("list keys as name:publickey lines, ready for trusted-public-keys (--json also says which ones you accepted)")
    .option("--json", "print JSON")
    .action((opts: { json?: boolean }) =>
      run(async (out) => {
        const { keys } = await (await client()).listNixKeys({});
        const pins = (await pinnedNixKeys(target())) ?? [];
        const rows = keys.map((k) => ({
          name: k.name,
          publicKey: k.publicKey,
          canSign: k.canSign,
          accepted: pins.includes(k.publicKey),
          createdAt: k.createdAt ? new Date(timestampMs(k.createdAt)).toISOString() : "",
        }));
        out(opts.json ? json(rows) : rows.map((r) => `${r.publicKey}\n`).join(""));
      }),
    );
  const cache = program.command("nix-cache").description("the organization's Nix binary cache on the coordinator");
  cache
    .command("url")
    .description("print the cache's URL (for substituters; nix authenticates with a netrc holding a token)")
    .option("--json", "print {\"url\": ...}")
    .action((opts: { json?: boolean }) =>
      run(async (out) => {
        const url = (await nixCacheAccess(target())).cacheUrl;
        out(opts.json ? json({ url }) : `${url}\n`);
      }),
    );
  cache
    .command("push <paths...>")
    .description("copy store paths and their closures to the cache (nix copy --to); the coordinator signs them with the organization's key")
    .action((paths: string[]) =>
      run(async (out) => {
        const url = await pushToNixCache(target(), paths, (text) => process.stderr.write(text));
        out(`copied ${paths.join(" ")} to ${url}\n`);
      }),
    );

  nixKey
    .command("rm <name>")
    .description("delete a key: paths it signed stay signed, but nothing new is signed with it")
    .action((name: string) =>
      run(async (out) => {
        await (await client()).deleteNixKey({ name });
        await unpinNixKey(target(), name);
        out(`deleted Nix key ${name}\n`);
      }),
    );
}
