import { defineConfig } from "@playwright/test";

// The server under test is started by scripts/test (LP_BASE_URL). Debian's Chromium is used;
// Playwright never downloads a browser here.
const baseURL = process.env.LP_BASE_URL ?? "http://127.0.0.1:3100";
const launchOptions = {
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
};

export default defineConfig({
  testDir: "./tests",
  timeout: 60_000,
  expect: { timeout: 10_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  use: { baseURL, launchOptions, trace: "retain-on-failure", screenshot: "only-on-failure" },
  projects: [
    {
      name: "ssr",
      testMatch: /ssr\.spec\.ts$/,
      use: { javaScriptEnabled: false },
    },
    {
      name: "hydrated",
      testMatch: /hydrated\.spec\.ts$/,
      use: { javaScriptEnabled: true },
    },
  ],
});
