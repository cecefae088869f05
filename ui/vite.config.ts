// The bundle: one script and one stylesheet from this origin, nothing inline, nothing
// remote (the CSP in src-tauri/tauri.conf.json allows nothing else), no source maps shipped.
import { defineConfig } from "vitest/config";

export default defineConfig({
  clearScreen: false,
  build: {
    target: "es2022",
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    // No inlined assets: every asset is a file of the bundle ('self' in the CSP).
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
  test: {
    environment: "happy-dom",
    include: ["src/**/*.test.ts"],
  },
});
