import { expect, Page } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";

export const SAMPLES = path.resolve(__dirname, "../../../shared/datasets");

export const SECTIONS = [
  { path: "/datasets", heading: "Datasets" },
  { path: "/train", heading: "Train" },
  { path: "/jobs", heading: "Jobs" },
  { path: "/models", heading: "Models" },
  { path: "/costs", heading: "Costs" },
];

export function uniqueEmail(prefix: string): string {
  return `${prefix}-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
}

export const PASSWORD = "correct horse battery staple";

/** Fills and submits the register form; works with and without JavaScript. */
export async function register(page: Page, email: string, password = PASSWORD) {
  await page.goto("/register");
  await submitRegister(page, email, password);
  await expect(page).toHaveURL(/\/$/);
}

/** Fills and submits the register form of the current page. */
export async function submitRegister(page: Page, email: string, password = PASSWORD) {
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
}

export async function expectSectionPage(page: Page, heading: string) {
  await expect(page.getByRole("heading", { level: 1, name: heading })).toBeVisible();
  await expect(page.getByRole("navigation", { name: "Sections" })).toBeVisible();
}

/** Waits until the WASM has hydrated the page (the app marks `<html data-hydrated>`). */
export async function waitForHydration(page: Page) {
  await page.locator("html[data-hydrated]").waitFor({ state: "attached" });
}

/** Checks that the page was not hydrated (the SSR-only project runs without JavaScript). */
export async function expectNotHydrated(page: Page) {
  await expect(page.locator("html[data-hydrated]")).toHaveCount(0);
}

/** Uploads a sample through the API with the page's session and waits until it is validated;
 *  returns the dataset's id. */
export async function readyDataset(page: Page, name: string, sample = "openai-chat.jsonl"): Promise<string> {
  const bytes = fs.readFileSync(path.join(SAMPLES, sample));
  const origin = new URL(page.url()).origin;
  const created = await (
    await page.request.post("/api/datasets", {
      headers: { Origin: origin },
      data: { name, file_name: `${name}.jsonl`, file_size: bytes.length },
    })
  ).json();
  expect((await page.request.put(created.data.uploadUrl, { data: bytes })).status()).toBe(200);
  const id = created.data.dataset.id;
  await page.request.post(`/api/datasets/${id}/confirm`, { headers: { Origin: origin } });
  await expect
    .poll(async () => (await (await page.request.get(`/api/datasets/${id}`)).json()).data.status)
    .toBe("ready");
  return id;
}

/** Collects the page's Content-Security-Policy violations (the console reports them). */
export function cspViolations(page: Page): string[] {
  const seen: string[] = [];
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) seen.push(m.text());
  });
  return seen;
}

/** Starts a demo job on the dataset through the API and waits until it completed; returns the
 *  job's and its model's ids. */
export async function finishedDemoJob(page: Page, dataset: string): Promise<{ job: string; model: string }> {
  const origin = new URL(page.url()).origin;
  const catalog = await (await page.request.get("/api/catalog")).json();
  const hyperparameters = { ...catalog.data.presets.fast, quantization: "none" };
  const created = await page.request.post("/api/jobs", {
    headers: { Origin: origin },
    data: { dataset_id: dataset, base_model: "tiny-random-llama", preset: "fast", hyperparameters, gpu_type: "local", gpu_count: 1 },
  });
  const job = (await created.json()).data.job.id;
  await expect
    .poll(async () => (await (await page.request.get(`/api/jobs/${job}`)).json()).data.job.status, { timeout: 180_000 })
    .toBe("completed");
  const model = (await (await page.request.get(`/api/jobs/${job}`)).json()).data.job.artifact_id;
  return { job, model };
}
