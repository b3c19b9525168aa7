import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { adminv1 } from "@flotilla/protocol";
import { adminOf } from "../access/principal.ts";
import type { ServiceContext } from "../context.ts";
import type { NixKeyRow } from "../store/index.ts";
import { formatPublicKey, generateNixKey, KeySealer, NIX_KEY_NAME, parseNixKey, type NixKeyMaterial } from "./nix-keys.ts";

const MAX_KEYS = 32;

function keyToProto(k: NixKeyRow): adminv1.NixKey {
  return create(adminv1.NixKeySchema, {
    name: k.name,
    publicKey: formatPublicKey({ name: k.name, publicKey: Buffer.from(k.publicKey, "base64") }),
    canSign: k.sealedSecret !== null,
    createdAt: timestampFromMs(k.createdAt),
  });
}

/** What a sealed secret is bound to, so a row copied to another organization or name will not open. */
export function sealContext(orgId: string, name: string): string {
  return `${orgId}\0${name}`;
}

/** The NixService: an organization's Nix signing keys. Secret halves never leave the coordinator. */
export function nixService(ctx: ServiceContext): ServiceImpl<typeof adminv1.NixService> {
  const sealer = new KeySealer(ctx.onlineIdentity);

  async function add(orgId: string, key: NixKeyMaterial): Promise<NixKeyRow> {
    if ((await ctx.store.nix.listKeys(orgId)).length >= MAX_KEYS) {
      throw new ConnectError(`an organization has at most ${MAX_KEYS} Nix keys`, Code.ResourceExhausted);
    }
    const row: NixKeyRow = {
      orgId,
      name: key.name,
      publicKey: Buffer.from(key.publicKey).toString("base64"),
      sealedSecret: key.seed ? sealer.seal(key.seed, sealContext(orgId, key.name)) : null,
      createdAt: Date.now(),
    };
    if (!(await ctx.store.nix.addKey(row))) {
      throw new ConnectError(`the organization already has a Nix key named ${key.name}`, Code.AlreadyExists);
    }
    return row;
  }

  return {
    async createNixKey(req, hc) {
      const { orgId } = adminOf(hc);
      if (!NIX_KEY_NAME.test(req.name)) throw new ConnectError("key names are letters, digits, . _ - (up to 128)", Code.InvalidArgument);
      return { key: keyToProto(await add(orgId, generateNixKey(req.name))) };
    },
    async importNixKey(req, hc) {
      const { orgId } = adminOf(hc);
      let key: NixKeyMaterial;
      try {
        key = parseNixKey(req.key);
      } catch (err) {
        throw new ConnectError(err instanceof Error ? err.message : String(err), Code.InvalidArgument);
      }
      return { key: keyToProto(await add(orgId, key)) };
    },
    async listNixKeys(_req, hc) {
      const { orgId } = adminOf(hc);
      return { keys: (await ctx.store.nix.listKeys(orgId)).map(keyToProto) };
    },
    async deleteNixKey(req, hc) {
      const { orgId } = adminOf(hc);
      if (!(await ctx.store.nix.deleteKey(orgId, req.name))) throw new ConnectError(`no Nix key named ${req.name}`, Code.NotFound);
      return {};
    },
  };
}

/** The organization's keys as signing material; secret halves opened where the coordinator holds them. */
export async function orgNixKeys(ctx: Pick<ServiceContext, "store" | "onlineIdentity">, orgId: string): Promise<NixKeyMaterial[]> {
  const sealer = new KeySealer(ctx.onlineIdentity);
  return (await ctx.store.nix.listKeys(orgId)).map((k) => ({
    name: k.name,
    publicKey: new Uint8Array(Buffer.from(k.publicKey, "base64")),
    seed: k.sealedSecret ? sealer.open(k.sealedSecret, sealContext(orgId, k.name)) : undefined,
  }));
}
