// Page-weight benchmark (docs/PERFORMANCE.md, issue 14): for every page, the bytes a cold
// browser receives until the page is hydrated and the network is idle (HTML + JS + WASM + CSS +
// ECharts, as sent: brotli where the browser asked for it), split by kind, and the time from
// navigation to hydrated (the app sets <html data-hydrated>). Median of RUNS cold loads, each in
// a fresh browser context (empty cache) signed in as the same user.
//
//   node scripts/bench/pages.mjs BASE_URL [RUNS]    (a server with open registration)
import { createRequire } from "node:module";
const require = createRequire(new URL("../../end2end/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const base = process.argv[2] ?? "http://127.0.0.1:3000";
const runs = Number(process.argv[3] ?? 5);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
});

// One account with a dataset, a finished demo job and its model, so every page has content.
const setup = await browser.newContext({ baseURL: base });
const api = setup.request;
const origin = { Origin: base };
const email = `bench-${Date.now()}@example.com`;
const registered = await api.post("/api/auth/register", { headers: origin, data: { email, password: "benchmark password" } });
if (!registered.ok()) throw new Error(`register: ${registered.status()} ${await registered.text()} (REGISTRATION=open?)`);
const fs = await import("node:fs");
const sample = fs.readFileSync(new URL("../../../shared/datasets/openai-chat.jsonl", import.meta.url));
const created = await (await api.post("/api/datasets", { headers: origin, data: { name: "bench", file_name: "bench.jsonl", file_size: sample.length } })).json();
await api.put(created.data.uploadUrl, { data: sample });
const dataset = created.data.dataset.id;
await api.post(`/api/datasets/${dataset}/confirm`, { headers: origin });
const until = async (get, done, what) => {
  for (let i = 0; i < 600; i++) {
    const value = await get();
    if (done(value)) return value;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`${what} did not finish`);
};
await until(async () => (await (await api.get(`/api/datasets/${dataset}`)).json()).data.status, (s) => s === "ready", "validation");
const catalog = await (await api.get("/api/catalog")).json();
const hyperparameters = { ...catalog.data.presets.fast, quantization: "none" };
const job = (await (await api.post("/api/jobs", { headers: origin, data: { dataset_id: dataset, base_model: "tiny-random-llama", preset: "fast", hyperparameters, gpu_type: "local", gpu_count: 1 } })).json()).data.job.id;
const done = await until(async () => (await (await api.get(`/api/jobs/${job}`)).json()).data.job, (j) => j.status === "completed", "the demo job");
const cookies = await setup.cookies();
await setup.close();

const pages = {
  overview: "/", datasets: "/datasets", dataset: `/datasets/${dataset}`, train: "/train", jobs: "/jobs",
  "job (charts)": `/jobs/${job}`, models: "/models", model: `/models/${done.artifact_id}`, costs: "/costs",
  notifications: "/notifications", settings: "/settings",
};
const kind = (url) => url.endsWith(".wasm") ? "wasm" : url.includes("echarts") ? "echarts" : url.endsWith(".js") ? "js" : url.endsWith(".css") ? "css" : url.includes("/pkg/") ? "other" : "html+api";
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

console.log(`${runs} cold loads per page, median; KB = 1,000 bytes as sent (headers included)`);
console.log("page".padEnd(16) + "total KB".padStart(10) + "wasm".padStart(8) + "js".padStart(7) + "css".padStart(7) + "echarts".padStart(9) + "html+api".padStart(10) + "hydrated ms".padStart(13));
for (const [name, path] of Object.entries(pages)) {
  const samples = [];
  for (let i = 0; i < runs; i++) {
    const context = await browser.newContext({ baseURL: base });
    await context.addCookies(cookies);
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send("Network.enable");
    const urls = new Map();
    const bytes = {};
    cdp.on("Network.responseReceived", (e) => urls.set(e.requestId, e.response.url));
    cdp.on("Network.loadingFinished", (e) => {
      const k = kind(urls.get(e.requestId) ?? "");
      bytes[k] = (bytes[k] ?? 0) + e.encodedDataLength;
    });
    const started = Date.now();
    await page.goto(path);
    await page.locator("html[data-hydrated]").waitFor({ state: "attached", timeout: 30_000 });
    const hydrated = Date.now() - started;
    await page.waitForLoadState("networkidle");
    // Chart pages load ECharts after hydration; give it its moment.
    await page.waitForTimeout(300);
    samples.push({ hydrated, bytes: { ...bytes } });
    await context.close();
  }
  const of = (k) => median(samples.map((s) => s.bytes[k] ?? 0)) / 1000;
  const total = median(samples.map((s) => Object.values(s.bytes).reduce((a, b) => a + b, 0))) / 1000;
  console.log(
    name.padEnd(16) + total.toFixed(1).padStart(10) + of("wasm").toFixed(1).padStart(8) + of("js").toFixed(1).padStart(7) +
      of("css").toFixed(1).padStart(7) + of("echarts").toFixed(1).padStart(9) + of("html+api").toFixed(1).padStart(10) +
      String(median(samples.map((s) => s.hydrated))).padStart(13),
  );
}
await browser.close();
