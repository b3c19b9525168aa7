import { execFileSync } from "node:child_process";
import { join } from "node:path";

/** Builds the `flotilla` bundle once, so end-to-end tests run the current sources quickly. */
export default function setup(): void {
  execFileSync(process.execPath, [join(import.meta.dirname, "../scripts/build.mjs")], { stdio: "inherit" });
}
