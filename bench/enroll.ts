/**
 * Enrollment at the store: what enrolling one more device costs when the organization already
 * has N, at two sizes, and the growth factor between them (1.0: independent of fleet size).
 * Each enrollment is what an agent's first connection writes: `enrollDevice` (the device under
 * a free name, the token's use counted) and then `createSession` (its Authenticate), on SQLite
 * with the coordinator's settings (WAL, synchronous=FULL, so every commit is an fsync).
 *
 * Two name patterns: distinct hostnames (`sim-00001`, as `flotilla sim` and real fleets send)
 * and one hostname for all (`box`, `box-2`, ...), the worst case for picking a free name.
 * The marginal cost is measured over the last enrollments of each size (after N - 200).
 *
 *   npm run bench -- enroll                             # 1000 and 10000 devices
 *   npm run bench -- enroll --enroll-devices 500,5000   # or BENCH_ENROLL_DEVICES=500,5000
 */
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { hashSecret, newSecret } from "@flotilla/protocol";
import { tempDir } from "@flotilla/protocol/testing";
import { openSqliteStore } from "@flotilla/coordinator/testing";

const TAIL = 200;

function sizes(argv = process.argv.slice(2)): number[] {
  const i = argv.findIndex((a) => a === "--enroll-devices" || a.startsWith("--enroll-devices="));
  const text = i < 0 ? (process.env.BENCH_ENROLL_DEVICES ?? "1000,10000") : argv[i]!.includes("=") ? argv[i]!.split("=")[1]! : argv[i + 1] ?? "";
  const list = text.split(",").map((s) => Number(s.trim()));
  if (list.length < 2 || list.some((n) => !Number.isInteger(n) || n <= TAIL)) throw new Error(`invalid sizes ${JSON.stringify(text)}: expected two or more, each above ${TAIL}, e.g. 1000,10000`);
  return list;
}

interface Cost {
  /** Mean ms per device over all N enrollments. */
  meanMs: number;
  /** Mean ms per device over the last TAIL enrollments: the cost at size N. */
  marginalMs: number;
  /** The same for its session alone. */
  sessionMs: number;
  /** CPU ms of this process per device over the last TAIL: the cost without the fsync waits. */
  marginalCpuMs: number;
}

async function enrollMany(n: number, name: (i: number) => string): Promise<Cost> {
  const dir = await tempDir("flotilla-bench-enroll-");
  const store = await openSqliteStore(join(dir, "flotilla.db"));
  try {
    const now = Date.now();
    await store.access.createOrg({ id: "org", name: "bench", createdAt: now });
    await store.devices.createJoinToken({
      id: "tok", orgId: "org", secretHash: "h".repeat(64), labels: { fleet: "bench" }, usesAllowed: 0, uses: 0,
      expiresAt: now + 86_400_000, autoApprove: true, createdAt: now, revokedAt: null,
    });
    let tailStart = 0;
    let tailCpu = process.cpuUsage();
    let sessionMs = 0;
    const start = performance.now();
    for (let i = 0; i < n; i++) {
      if (i === n - TAIL) {
        tailStart = performance.now();
        tailCpu = process.cpuUsage();
      }
      const r = await store.devices.enrollDevice(
        "tok",
        { id: `dev_${i}`, publicKey: `key${String(i).padStart(39, "0")}`, name: name(i), facts: { hostname: name(i), arch: "x86_64" }, agentVersion: "0.1.0", capabilities: [] },
        Date.now(),
      );
      if (!r.ok) throw new Error(`enrollment ${i} refused: ${r.reason}`);
      const s0 = performance.now();
      const t = Date.now();
      await store.sessions.createSession({ tokenHash: hashSecret(newSecret()), orgId: "org", principalKind: "device", principalId: r.device.id, createdAt: t, expiresAt: t + 86_400_000 });
      if (i >= n - TAIL) sessionMs += performance.now() - s0;
    }
    const end = performance.now();
    const cpu = process.cpuUsage(tailCpu);
    return { meanMs: (end - start) / n, marginalMs: (end - tailStart) / TAIL, sessionMs: sessionMs / TAIL, marginalCpuMs: (cpu.user + cpu.system) / 1000 / TAIL };
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Runs the enrollment benchmark and prints its figures. */
export async function benchEnroll(print: (line: string) => void): Promise<void> {
  const ns = sizes();
  const patterns: [string, (i: number) => string][] = [
    ["distinct hostnames", (i) => `sim-${String(i).padStart(5, "0")}`],
    ["one hostname for all", () => "box"],
  ];
  print(`enrollment at the store (SQLite, synchronous=FULL; enroll + session per device; marginal = last ${TAIL})`);
  for (const [label, name] of patterns) {
    const costs: Cost[] = [];
    for (const n of ns) costs.push(await enrollMany(n, name));
    const first = costs[0]!;
    const last = costs[costs.length - 1]!;
    print(`  ${label}:`);
    for (const [i, n] of ns.entries()) {
      const c = costs[i]!;
      print(`    ${String(n).padStart(6)} devices: ${c.meanMs.toFixed(2)} ms/device mean; at that size ${c.marginalMs.toFixed(2)} ms/device (session ${c.sessionMs.toFixed(2)} ms), CPU ${c.marginalCpuMs.toFixed(2)} ms/device`);
    }
    const x = ns[ns.length - 1]! / ns[0]!;
    print(`    growth at x${x} devices: wall ${(last.marginalMs / first.marginalMs).toFixed(2)}, CPU ${(last.marginalCpuMs / first.marginalCpuMs).toFixed(2)}`);
  }
}
