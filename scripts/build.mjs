// Bundles the `flotilla` program into packages/cli/dist/flotilla.mjs: our TypeScript compiled
// into one file (third-party packages stay external), so a command starts without compiling
// sources at every run. bin/flotilla.js falls back to the sources when the bundle is stale.
// Then builds the web console (packages/web) into packages/web/dist, which the coordinator serves.
import { build } from "esbuild";
import { rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
await rm(join(root, "packages/cli/dist"), { recursive: true, force: true });

await build({
  entryPoints: [join(root, "packages/cli/src/entry.ts")],
  outdir: join(root, "packages/cli/dist"),
  entryNames: "flotilla",
  chunkNames: "chunks/[name]-[hash]",
  outExtension: { ".js": ".mjs" },
  splitting: true,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  // Linked, not inline: an inline map is part of each chunk's source text, which V8 keeps in
  // memory for as long as the process runs (the idle agent's footprint, bench/agent.ts).
  // `node --enable-source-maps` reads the .map files beside the chunks all the same.
  sourcemap: "linked",
  logLevel: "warning",
  plugins: [
    {
      name: "external-third-party",
      setup(b) {
        // Bare imports other than our workspace packages are left to Node's resolver.
        b.onResolve({ filter: /^[^./]/ }, (args) =>
          args.path.startsWith("@flotilla/") ? undefined : { path: args.path, external: true },
        );
      },
    },
  ],
});

// The web console: index.html and content-hashed assets (packages/web/vite.config.ts).
const { build: viteBuild } = await import("vite");
await viteBuild({ configFile: join(root, "packages/web/vite.config.ts"), root: join(root, "packages/web/app"), logLevel: "warn" });
