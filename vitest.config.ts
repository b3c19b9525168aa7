import { defineConfig } from "vitest/config";

// End-to-end files spend most of their time waiting on processes and sockets, not computing:
// three at once keep a 2-core CI machine busy without starving the timing of any one of them.
// FLOTILLA_TEST_WORKERS=1 runs the files one after another.
const workers = Number(process.env.FLOTILLA_TEST_WORKERS ?? 3);

export default defineConfig({
  test: {
    include: ["packages/*/src/**/*.test.ts", "test/**/*.test.ts", "bench/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    allowOnly: false,
    pool: "forks",
    maxWorkers: workers,
    minWorkers: 1,
    reporters: ["default"],
  },
});
