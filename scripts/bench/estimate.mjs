// Estimate benchmark (docs/PERFORMANCE.md): the cost of one Train-page keystroke (the rules and
// the estimator) inside the shipped WASM, in headless Debian Chromium.
//
//   node scripts/bench/estimate.mjs [BASE_URL]     (a running server, e.g. ./scripts/run)
import { createRequire } from "node:module";
const require = createRequire(new URL("../../end2end/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const base = process.argv[2] ?? "http://127.0.0.1:3000";
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
});
const page = await browser.newPage();
await page.goto(`${base}/login`);
await page.waitForFunction(() => performance.getEntriesByType("resource").some((r) => r.name.endsWith(".wasm")));
await page.waitForLoadState("networkidle");
const results = await page.evaluate(async () => {
  // The hook is in the Train page's bundle, beside this page's (content-hashed) one.
  const url = document.querySelector("link[rel=modulepreload]").href.replace(/lora-pipeline-\w+\.js$/, "lora-pipeline-train.js");
  const wasm = await import(url);
  await wasm.default({ module_or_path: url.replace(/\.js$/, "_bg.wasm") });
  wasm.bench_estimate(1000); // warm up
  return [10_000, 100_000].map((n) => ({ n, ms: wasm.bench_estimate(n) }));
});
for (const { n, ms } of results) {
  console.log(`${n} keystrokes: ${(ms * 1000).toFixed(2)} µs per keystroke (rules + estimate, in the WASM)`);
}
await browser.close();
