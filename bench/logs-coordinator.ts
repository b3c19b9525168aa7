/**
 * The coordinator side of `npm run bench -- logs`, in a process of its own as in production
 * (agents ship from other machines): starts a coordinator on SQLite, enrolls the number of
 * devices its argument gives (default 1) and prints one JSON line with the coordinator's address
 * and each device's call headers. It stops when its standard input ends (the benchmark closed
 * it, or died).
 */
import { enrollDevice, SETUP_CODE, startTestCoordinator } from "@flotilla/coordinator/testing";
import { generateIdentity } from "@flotilla/protocol";

const devices = Number(process.argv[2] ?? 1);
const t = await startTestCoordinator({ sessionTtlMs: 3_600_000 });
const owner = await t.login(generateIdentity(), { setupCode: SETUP_CODE });
const headers: Record<string, string>[] = [];
for (let i = 0; i < devices; i++) headers.push((await enrollDevice(t, owner, `bench-${i}`)).headers);
process.stdout.write(`${JSON.stringify({ url: t.coord.url, headers })}\n`);

process.stdin.resume();
process.stdin.on("end", () => {
  void t.close().then(() => process.exit(0));
});
