import type { Coordinator } from "@flotilla/coordinator";
import { newId, nodeId } from "@flotilla/protocol";
import { login } from "../admin/client.ts";
import type { Credentials } from "../admin/credentials.ts";

/**
 * Whoever can run `flotilla up` in this folder owns its data directory, so the local admin key
 * becomes an owner: through the setup code on the first start, directly in the store after.
 */
export async function ensureLocalOwner(c: Coordinator, creds: Credentials): Promise<void> {
  if (c.setupCode) {
    await login(creds, c.url, { setupCode: c.setupCode, keyName: "local owner" });
    return;
  }
  const identity = await creds.identity();
  const registered = await c.store.findAdminKeysByPublicKey(identity.id);
  if (registered.length === 0) {
    const org = (await c.store.listOrgs())[0];
    if (!org) throw new Error("the data directory has no organization; remove it and start again");
    const now = Date.now();
    const memberId = `mem_${newId()}`;
    await c.store.addMember({ id: memberId, orgId: org.id, name: `local-owner-${newId(6)}`, role: "owner", passwordHash: null, createdAt: now, removedAt: null });
    await c.store.addAdminKey({ id: `key_${newId()}`, orgId: org.id, memberId, name: "local owner", publicKey: nodeId(identity.publicKey), createdAt: now, revokedAt: null });
  }
  await login(creds, c.url);
}
