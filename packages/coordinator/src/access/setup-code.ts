/**
 * The one-time owner setup code: while no owner exists, whoever logs in with it becomes the
 * first owner (login.ts). Only its hash is stored.
 */
import { randomBytes } from "node:crypto";
import { hashSecret } from "@flotilla/protocol/agent";
import type { Store } from "../store/index.ts";

/** Setup codes are shown grouped (ABCD-EFGH-...); accept them with or without dashes, any case. */
export function normalizeSetupCode(code: string): string {
  return code.toUpperCase().replace(/[^A-Z0-9]/g, "");
}

/**
 * Why a setup code chosen by hand is too weak to guard the first owner, or undefined when it is
 * strong enough: at least 16 letters and digits, not mostly the same few. (A generated code has
 * 16 characters from 32, about 80 bits.)
 */
export function setupCodeWeakness(code: string): string | undefined {
  const n = normalizeSetupCode(code);
  if (n.length < 16) return `has ${n.length} letters and digits; it needs at least 16`;
  if (new Set(n).size < 8) return "repeats too few different characters; it needs at least 8 different ones";
  return undefined;
}

function newSetupCode(): string {
  const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  const chars = [...randomBytes(16)].map((b) => alphabet[b % alphabet.length]);
  return [0, 4, 8, 12].map((i) => chars.slice(i, i + 4).join("")).join("-");
}

/** Ensures an unused setup code exists while no owner does; returns it for printing. */
export async function prepareSetupCode(store: Store, given: string | undefined): Promise<string | undefined> {
  if (await store.settings.getSetting("setup_code_used")) return undefined;
  const code = given ?? newSetupCode();
  await store.settings.setSetting("setup_code_hash", hashSecret(normalizeSetupCode(code)));
  return code;
}
