import { createHash } from "node:crypto";

/** A seeded pseudo-random source in [0, 1) (mulberry32): the same seed gives the same sequence. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A 32-bit number from any strings, for seeding. */
export function hashSeed(...parts: (string | number)[]): number {
  return createHash("sha256").update(parts.join("\0")).digest().readUInt32LE(0);
}

/**
 * Which of `devices` simulated devices (by index) fail a given release, each with its rank
 * (0, 1, ...): exactly round(rate * devices) of them, chosen by a shuffle seeded with `seed`
 * and the release's target path. Every worker computes the same set, so the whole simulated
 * fleet fails exactly that many, and the same seed fails the same devices again.
 */
export function failingDevices(devices: number, rate: number, seed: number, targetPath: string): Map<number, number> {
  const count = Math.round(rate * devices);
  const failing = new Map<number, number>();
  if (count <= 0) return failing;
  const order = Array.from({ length: devices }, (_, i) => i);
  const random = seededRandom(hashSeed(seed, targetPath));
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  order.slice(0, count).forEach((device, rank) => failing.set(device, rank));
  return failing;
}
