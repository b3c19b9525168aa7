/**
 * Following a move to another organization of the same coordinator (docs/device-move.md). The
 * agent trusts releases through its organization's TUF root; it takes the new organization's
 * root only when the move is signed by the threshold of root keys of the root it trusts now.
 */
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { DeviceMoveRefused, parseDeviceMove, verifyDeviceMove, type agentv1, type Logger } from "@flotilla/protocol/agent";
import type { Enrollment, StateDir } from "./state.ts";

/** Where the release manager keeps the organization's trusted TUF metadata (releases/wiring.ts). */
export function tufMetadataDir(stateDir: string): string {
  return join(stateDir, "releases", "tuf");
}

/**
 * Checks desired state for a move. An enrollment: the move verified, the stored enrollment (returned)
 * now names the new organization (and its root, when it has one) and the old organization's
 * metadata is gone; the caller hands the root to the release manager. "refused": the move does
 * not verify; nothing changed and the desired state must not be applied. undefined: no move.
 */
export async function followMove(state: StateDir, desired: agentv1.DesiredState, log: Logger): Promise<Enrollment | "refused" | undefined> {
  const enrollment = await state.readEnrollment();
  if (!enrollment || !desired.organizationId || desired.organizationId === enrollment.orgId) return undefined;
  const rootPath = join(tufMetadataDir(state.dir), "root.json");
  let trusted: unknown;
  try {
    trusted = JSON.parse(await readFile(rootPath, "utf8"));
  } catch {
    trusted = undefined; // no root pinned yet: the agent trusted no organization's keys
  }
  try {
    const e = desired.moveEndorsement ? parseDeviceMove(desired.moveEndorsement) : undefined;
    if (trusted !== undefined && !e) throw new DeviceMoveRefused("the coordinator says the device moved, but sends no move signed by the organization's root keys");
    if (e && (e.deviceId !== enrollment.deviceId || e.fromOrg !== enrollment.orgId || e.toOrg !== desired.organizationId)) {
      throw new DeviceMoveRefused(`the move endorsement is for another move (${e.deviceId} from ${e.fromOrg} to ${e.toOrg})`);
    }
    if (trusted !== undefined && e) verifyDeviceMove(e, trusted);
    const moved: Enrollment = { ...enrollment, orgId: desired.organizationId, root: e?.toRoot ?? undefined };
    if (!moved.root) delete moved.root;
    await state.writeEnrollment(moved);
    await rm(tufMetadataDir(state.dir), { recursive: true, force: true });
    log.info("device moved to another organization; trusting its root from now on", {
      from: enrollment.orgId,
      to: desired.organizationId,
      root: e?.toRoot ? `version ${e.toRoot.version} sha256 ${e.toRoot.sha256}` : "its first, on first use",
    });
    return moved;
  } catch (err) {
    if (!(err instanceof DeviceMoveRefused)) throw err;
    log.error("refusing a move to another organization; keeping the releases installed and ignoring the new desired state", { to: desired.organizationId, err: err.message });
    return "refused";
  }
}
