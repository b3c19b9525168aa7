// Bundles the `flotilla` program into packages/cli/dist/flotilla.mjs: our TypeScript compiled
// into one file and chunks it loads on demand, so a command starts without compiling sources at
// every run. bin/flotilla.js falls back to the sources when the bundle is stale. The ES-module
// packages every agent loads (INLINED) are bundled too, tree-shaken and minified; other
// third-party packages stay external, left to Node's resolver.
// Then builds the web console (packages/web) into packages/web/dist, which the coordinator serves.
import { build } from "esbuild";
import { rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Third-party packages compiled into the bundle: the ones `flotilla agent` loads at start (its
 * connection, its messages, its configuration), all ES modules. Inside the bundle only what
 * Flotilla uses of them is kept (not zod's 40 locales, nor the parts of protobuf-es and Connect
 * it never calls), in a few chunks instead of some 240 files: the idle agent's heap holds the
 * source text of every module it loaded (bench/agent.ts). CommonJS packages (commander, tar,
 * tuf-js) stay external: an ES-module bundle cannot `require` Node's built-in modules for them.
 * Each of these packages must be imported only through the bundle (one copy of its classes and
 * registries in a process): no external package depends on them.
 */
const INLINED = /^(zod|smol-toml|@bufbuild\/protobuf|@connectrpc\/connect|@connectrpc\/connect-node)(\/|$)/;

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
  // Whitespace and syntax only: names stay as written, in stack traces and `err.name`.
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: "warning",
  plugins: [
    {
      name: "external-third-party",
      setup(b) {
        // Bare imports other than our workspace packages and INLINED are left to Node's resolver.
        b.onResolve({ filter: /^[^./]/ }, (args) =>
          args.path.startsWith("@flotilla/") || INLINED.test(args.path) ? undefined : { path: args.path, external: true },
        );
      },
    },
  ],
});

// The web console: index.html and content-hashed assets (packages/web/vite.config.ts).
const { build: viteBuild } = await import("vite");
await viteBuild({ configFile: join(root, "packages/web/vite.config.ts"), root: join(root, "packages/web/app"), logLevel: "warn" });
