/**
 * `flotilla device move DEVICE --to-org ORG`: moves a device to another organization of the same
 * coordinator (docs/device-move.md). The admin needs rights in both organizations; when the old
 * organization has a signing root, the admin signs the move with its root keys, having checked
 * the destination's root against the one this admin verified for it.
 */
import { adminv1, deviceMoveMessage, tufRootDigest, type DeviceMoveStatement } from "@flotilla/protocol";
import { adminBearer, adminClient, serviceClient, type AdminTarget } from "../admin/client.ts";
import { UsageError } from "../errors.ts";
import { json } from "../output.ts";
import { signersFor, type SigningOpts } from "../signing/signing-options.ts";
import { UntrustedMetadataError, verifiedRepository } from "../signing/trusted-root.ts";
import { deviceJson } from "./view.ts";

export interface MoveOpts extends SigningOpts {
  toOrg: string;
  /** A session or API token of the destination organization, when the admin uses API tokens. */
  toOrgToken?: string;
  json?: boolean;
}

/** Moves `ref` to `opts.toOrg`; prints what happened. */
export async function moveDevice(target: AdminTarget, ref: string, opts: MoveOpts, out: (s: string) => void): Promise<void> {
  if (!opts.toOrg) throw new UsageError("--to-org ORG is required");
  const destination: AdminTarget = { ...target, org: opts.toOrg, apiToken: opts.toOrgToken };
  if (target.apiToken && !opts.toOrgToken) throw new UsageError("with FLOTILLA_TOKEN, also pass --to-org-token TOKEN: an API token of the destination organization");
  const destinationCredential = opts.toOrgToken ?? (await adminBearer(destination)).token;
  const client = await adminClient(target);
  const base = { device: ref, toOrganization: opts.toOrg, destinationCredential };
  const prepared = await client.moveDevice({ ...base, prepare: true });
  const statement = JSON.parse(prepared.statement) as DeviceMoveStatement;

  // The coordinator names the destination's root; the devices will trust it, so check it against
  // the root this admin verified for that organization.
  const destRepo = await verifiedRepository(destination, await serviceClient(destination, adminv1.ReleaseService));
  const destRoot = destRepo.root ? tufRootDigest(destRepo.root.toJSON()) : null;
  if (JSON.stringify(destRoot) !== JSON.stringify(statement.toRoot)) {
    throw new UntrustedMetadataError(`the coordinator names another root for organization ${opts.toOrg} than the one this admin verified`);
  }

  let endorsement = "";
  if (prepared.endorsementRequired) {
    const repo = await verifiedRepository(target, await serviceClient(target, adminv1.ReleaseService));
    const role = repo.root?.signed.roles.root;
    if (!role) throw new UntrustedMetadataError("the coordinator says the organization has a signing root, but presents none");
    const { signers, close } = await signersFor(target, opts, { keyIds: role.keyIDs, threshold: role.threshold });
    try {
      const message = deviceMoveMessage(statement);
      const accepted = signers.filter((s) => role.keyIDs.includes(s.keyId));
      const signatures = await Promise.all(accepted.map(async (s) => ({ keyid: s.keyId, sig: Buffer.from(await s.sign(message)).toString("hex") })));
      endorsement = JSON.stringify({ ...statement, signatures });
    } finally {
      close();
    }
  }
  const { device } = await client.moveDevice({ ...base, endorsement });
  if (!device) throw new UsageError(`no device ${ref}`);
  if (opts.json) return out(json({ ...deviceJson(device), organization: opts.toOrg }));
  out(`moved ${device.name} to organization ${opts.toOrg}: it keeps running what it runs; deploy the new organization's releases to it\n`);
}
