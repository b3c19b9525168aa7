import { chmod, lstat, mkdir, readFile, readlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as tar from "tar";
import { beforeEach, describe, expect, it } from "vitest";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { makeBundle } from "./testing/fixtures.ts";
import { BundleRefusedError, unpackTarball } from "./unpack.ts";

const tmp = useTempDir("flotilla-unpack-");
let work: string;
let dest: string;
beforeEach(async () => {
  work = tmp.path;
  dest = join(work, "dest");
  await mkdir(dest);
});

describe("unpackTarball", () => {
  it("unpacks files, directories and symlinks that stay inside, dropping setuid bits", async () => {
    const src = join(work, "src");
    await mkdir(join(src, "bin"), { recursive: true });
    await mkdir(join(src, "lib"));
    await writeFile(join(src, "lib", "app"), "#!/bin/sh\necho hi\n");
    await chmod(join(src, "lib", "app"), 0o4755);
    const { symlink } = await import("node:fs/promises");
    await symlink("../lib/app", join(src, "bin", "app"));
    const file = join(work, "b.tar");
    await tar.c({ file, cwd: src }, ["bin", "lib"]);

    await unpackTarball(file, dest);

    expect(await readFile(join(dest, "bin", "app"), "utf8")).toContain("echo hi");
    expect(await readlink(join(dest, "bin", "app"))).toBe("../lib/app");
    expect((await lstat(join(dest, "lib", "app"))).mode & 0o7777).toBe(0o755);
  });

  it("refuses an archive that unpacks to more than the byte limit, before writing anything", async () => {
    const art = await makeBundle(work, "big", { "a.bin": "x".repeat(10_000), "b.bin": "y".repeat(10_000) });
    await expect(unpackTarball(art.path, dest, { maxBytes: 15_000, maxEntries: 100 })).rejects.toThrow(/more than 15000 bytes/);
    expect(await lstat(join(dest, "a.bin")).catch(() => undefined)).toBeUndefined();
  });

  it("refuses an archive with more entries than the limit", async () => {
    const files = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`f${i}`, "x"]));
    const art = await makeBundle(work, "many", files);
    await expect(unpackTarball(art.path, dest, { maxBytes: 1e9, maxEntries: 10 })).rejects.toThrow(/more than 10 entries/);
  });

  it("refuses a file that is not a tar archive", async () => {
    const file = join(work, "junk.tar.gz");
    await writeFile(file, "this is not an archive, just text that is long enough to be looked at ".repeat(20));
    await expect(unpackTarball(file, dest)).rejects.toBeInstanceOf(BundleRefusedError);
  });

  it("refuses a hard link whose target climbs out of the release directory", async () => {
    const header = new tar.Header({ path: "passwd", type: "Link", linkpath: "../../etc/passwd", size: 0, mode: 0o644, mtime: new Date(0) });
    const block = Buffer.alloc(512);
    header.encode(block, 0);
    const file = join(work, "hl.tar");
    await writeFile(file, Buffer.concat([block, Buffer.alloc(1024)]));
    await expect(unpackTarball(file, dest)).rejects.toThrow(/hard link passwd -> \.\.\/\.\.\/etc\/passwd escapes/);
  });
});
