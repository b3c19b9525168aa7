// Builds the console into dist/: index.html and content-hashed files under dist/assets/, which
// the coordinator serves (packages/coordinator/src/web). No inline script or style is emitted,
// so the page runs under a Content-Security-Policy without 'unsafe-inline'.
import { defineConfig } from "vite";

export default defineConfig({
  root: "app",
  base: "/",
  esbuild: { jsx: "automatic" },
  build: {
    outDir: "../dist",
    emptyOutDir: true,
    assetsDir: "assets",
    // Inlined assets would be data: URLs; keep every asset a file of its own.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 1000,
  },
  server: { proxy: { "^/(auth|flotilla\\.)": "http://127.0.0.1:7700" } },
});
