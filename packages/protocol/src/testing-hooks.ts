/**
 * vitest hooks for tests across packages (`@flotilla/protocol/testing/hooks`): resources made
 * before each test and released after it, instead of a beforeEach/afterEach pair per file.
 */
import { rm } from "node:fs/promises";
import { afterEach, beforeEach } from "vitest";
import { tempDir } from "./testing.ts";

/**
 * A fresh temporary directory for each test of the file (or of the describe block it is called
 * in), removed with its contents after the test. Read `path` inside tests and hooks only.
 */
export function useTempDir(prefix?: string): { readonly path: string } {
  let path: string | undefined;
  beforeEach(async () => {
    path = await tempDir(prefix);
  });
  afterEach(async () => {
    if (path !== undefined) await rm(path, { recursive: true, force: true });
    path = undefined;
  });
  return {
    get path(): string {
      if (path === undefined) throw new Error("useTempDir: the directory exists only while a test runs");
      return path;
    },
  };
}
