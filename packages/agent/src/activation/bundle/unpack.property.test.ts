import { lstat, mkdir, readdir, readFile, readlink, realpath, writeFile } from "node:fs/promises";
import { join, sep } from "node:path";
import fc from "fast-check";
import * as tar from "tar";
import { describe, expect, it } from "vitest";
import { propertyRuns, propertyTimeout } from "@flotilla/protocol/testing";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { BundleRefusedError, unpackTarball } from "./unpack.ts";

const RUNS = 120;
const runs = propertyRuns(RUNS);
const tmp = useTempDir("flotilla-unpack-prop-");

/** Path pieces an attacker would use: climbing, absolute (into a directory beside dest), dots, empty. */
const segment = fc.constantFrom("a", "b", "c", "..", ".", "", "outside", "keep");
const relPath = fc.array(segment, { minLength: 1, maxLength: 5 }).map((s) => s.join("/"));
const path = fc.oneof(
  { weight: 6, arbitrary: relPath },
  { weight: 1, arbitrary: relPath.map((p) => `./${p}`) },
  { weight: 1, arbitrary: relPath.map((p) => `@ABS/${p}`) },
  { weight: 1, arbitrary: relPath.map((p) => `${p}/`) },
);
const entry = fc.oneof(
  { weight: 4, arbitrary: fc.record({ type: fc.constant("File"), path, size: fc.nat({ max: 120 }), mode: fc.constantFrom(0o644, 0o755, 0o4755, 0o2755, 0o1777) }) },
  { weight: 2, arbitrary: fc.record({ type: fc.constant("Directory"), path, size: fc.constant(0), mode: fc.constantFrom(0o755, 0o1777) }) },
  { weight: 3, arbitrary: fc.record({ type: fc.constant("SymbolicLink"), path, size: fc.constant(0), mode: fc.constant(0o777), linkpath: fc.oneof(path, fc.constantFrom("/etc", "..", "../outside", "../../outside/keep")) }) },
  { weight: 2, arbitrary: fc.record({ type: fc.constant("Link"), path, size: fc.constant(0), mode: fc.constant(0o644), linkpath: fc.oneof(path, fc.constantFrom("../outside/keep", "@ABS/outside/keep")) }) },
  { weight: 1, arbitrary: fc.record({ type: fc.constantFrom("FIFO", "CharacterDevice", "BlockDevice"), path, size: fc.constant(0), mode: fc.constant(0o644) }) },
);
type Entry = { type: string; path: string; size: number; mode: number; linkpath?: string };

/** A tar archive of the entries, written header by header so that any path or link gets in. */
function archive(entries: Entry[], abs: string): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const fill = (p: string) => p.replace("@ABS", abs);
    const header = new tar.Header({ path: fill(e.path), type: e.type as tar.Header["type"], size: e.size, mode: e.mode, mtime: new Date(0), uid: 0, gid: 0, ...(e.linkpath === undefined ? {} : { linkpath: fill(e.linkpath) }) });
    const block = Buffer.alloc(512);
    header.encode(block, 0);
    blocks.push(block);
    if (e.size > 0) blocks.push(Buffer.alloc(Math.ceil(e.size / 512) * 512, 0x78));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** Everything under `dir` (skipping `skip`): type, link target or content, by relative path. */
async function snapshot(dir: string, skip: string, base = dir, out = new Map<string, string>()): Promise<Map<string, string>> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (p === skip) continue;
    const rel = p.slice(base.length + 1);
    const st = await lstat(p);
    if (e.isSymbolicLink()) out.set(rel, `link ${await readlink(p)}`);
    else if (e.isDirectory()) {
      out.set(rel, `dir ${(st.mode & 0o7777).toString(8)}`);
      await snapshot(p, skip, base, out);
    } else out.set(rel, `file ${(st.mode & 0o7777).toString(8)} ${st.nlink} ${(await readFile(p)).toString("hex")}`);
  }
  return out;
}

describe("bundle unpacker properties", () => {
  it(
    "never writes outside its directory, whatever the paths and links, and refuses with BundleRefusedError only",
    async () => {
      let round = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(entry, { minLength: 1, maxLength: 8 }), fc.nat({ max: 400 }), fc.integer({ min: 1, max: 10 }), async (entries, maxBytes, maxEntries) => {
          const root = join(tmp.path, `u${round++}`);
          const dest = join(root, "dest");
          await mkdir(join(root, "outside"), { recursive: true });
          await mkdir(dest);
          await writeFile(join(root, "outside", "keep"), "precious");
          const file = join(root, "bundle.tar");
          await writeFile(file, archive(entries as Entry[], root));
          const before = await snapshot(root, dest);

          let refused: unknown;
          const outcome = await Promise.race([
            unpackTarball(file, dest, { maxBytes, maxEntries }).then(
              () => "done",
              (err: unknown) => {
                refused = err;
                return "refused";
              },
            ),
            new Promise<string>((res) => setTimeout(() => res("hung"), 5_000).unref()),
          ]);
          expect(outcome).not.toBe("hung");
          if (refused !== undefined) expect(refused).toBeInstanceOf(BundleRefusedError);

          // Nothing beside dest changed, also when the bundle was refused half-way.
          expect(await snapshot(root, dest)).toEqual(before);
          if (refused !== undefined) return;

          // What it accepted stays inside, within the limits, without setuid/setgid/sticky bits.
          const inside = await snapshot(dest, "");
          let bytes = 0;
          const realDest = await realpath(dest);
          for (const [rel, what] of inside) {
            if (what.startsWith("file ")) bytes += (what.split(" ")[3]!.length) / 2;
            if (!what.startsWith("link ")) expect(Number.parseInt(what.split(" ")[1]!, 8) & 0o7000).toBe(0);
            if (what.startsWith("link ")) {
              const resolved = await realpath(join(dest, rel)).catch(() => undefined);
              if (resolved !== undefined) expect(resolved === realDest || resolved.startsWith(realDest + sep)).toBe(true);
            }
          }
          expect(bytes).toBeLessThanOrEqual(maxBytes);
          expect(entries.length).toBeLessThanOrEqual(maxEntries);
        }),
        {
          ...runs,
          examples: [
            // Found by this property: a link inside its own target hung node-tar's extractor forever.
            [[{ type: "SymbolicLink", path: "c", size: 0, mode: 0o777, linkpath: "c/a" }, { type: "File", path: "a", size: 0, mode: 0o644 }], 0, 2],
            // Found by this property: clashing entries failed with a bare ENOTEMPTY, not BundleRefusedError.
            [[{ type: "Directory", path: "b/a", size: 0, mode: 0o755 }, { type: "File", path: "b/.", size: 0, mode: 0o644 }], 0, 2],
          ],
        },
      );
    },
    propertyTimeout(60_000, RUNS),
  );
});
