import { expect, test } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import { expectNotHydrated, register, uniqueEmail, SAMPLES } from "./helpers";

// JavaScript off: the dataset pages are complete server-rendered HTML. The dataset is created
// through the REST API with the same session (as a script would).


async function uploadViaApi(page: import("@playwright/test").Page, file: string): Promise<string> {
  const bytes = fs.readFileSync(path.join(SAMPLES, file));
  const origin = new URL(page.url()).origin;
  const created = await page.request.post("/api/datasets", {
    headers: { Origin: origin },
    data: { name: file, file_name: file, file_size: bytes.length },
  });
  expect(created.status()).toBe(201);
  const body = await created.json();
  const put = await page.request.put(body.data.uploadUrl, { data: bytes });
  expect(put.status()).toBe(200);
  const id = body.data.dataset.id as string;
  const confirmed = await page.request.post(`/api/datasets/${id}/confirm`, { headers: { Origin: origin } });
  expect(confirmed.status()).toBe(202);
  for (let i = 0; i < 100; i++) {
    const status = (await (await page.request.get(`/api/datasets/${id}`)).json()).data.status;
    if (status === "ready" || status === "invalid") break;
    await page.waitForTimeout(100);
  }
  return id;
}

test("datasets list, detail and problems read without JavaScript", async ({ page }) => {
  await register(page, uniqueEmail("ssr-data"));
  await expectNotHydrated(page);
  await expect(page).toHaveURL(/\/$/);
  const good = await uploadViaApi(page, "sharegpt.jsonl");
  const bad = await uploadViaApi(page, "broken-invalid-json-line.jsonl");

  await page.goto("/datasets");
  await expect(page.getByRole("link", { name: "sharegpt.jsonl" })).toBeVisible();
  await expect(page.getByRole("link", { name: "broken-invalid-json-line.jsonl" })).toBeVisible();
  // Filters are a plain GET form.
  await page.getByLabel("Status").selectOption("invalid");
  await page.getByRole("button", { name: "Apply" }).click();
  await expect(page).toHaveURL(/status=invalid/);
  await expect(page.getByRole("link", { name: "sharegpt.jsonl" })).toHaveCount(0);

  await page.goto(`/datasets/${good}`);
  await expect(page.getByText("Ready to train.")).toBeVisible();
  await expect(page.getByText("Detected format: ShareGPT.")).toBeVisible();
  await expect(page.locator(".stat", { hasText: "Examples" })).toContainText("40");
  // Without JavaScript the histogram is CSS bars with the numbers in text.
  await expect(page.getByRole("img", { name: "Histogram of tokens per example" })).toBeVisible();
  await expect(page.getByText(/min \d+ · median \d+ · p95 \d+/)).toBeVisible();

  await page.goto(`/datasets/${bad}`);
  await expect(page.getByText("This file has problems.")).toBeVisible();
  const row = page.locator("table.problems tbody tr").first();
  await expect(row.locator("td").first()).toHaveText("6");
  await expect(row).toContainText("invalid_json");

  // A job created through the API appears on the Jobs page (read without JavaScript).
  const catalog = await (await page.request.get("/api/catalog")).json();
  const origin = new URL(page.url()).origin;
  const job = await page.request.post("/api/jobs", {
    headers: { Origin: origin },
    data: {
      dataset_id: good,
      base_model: "tiny-random-llama",
      preset: "fast",
      hyperparameters: { ...catalog.data.presets.fast, quantization: "none" },
      gpu_type: "local",
      gpu_count: 1,
    },
  });
  expect(job.status()).toBe(201);
  await page.goto("/jobs");
  await expect(page.getByRole("cell", { name: "tiny-random-llama" })).toBeVisible();
  await expect(page.getByRole("cell", { name: "sharegpt.jsonl" })).toBeVisible();

  // Another user's dataset is simply not found.
  await page.context().clearCookies();
  await register(page, uniqueEmail("ssr-other"));
  await page.goto(`/datasets/${good}`);
  await expect(page.getByRole("heading", { name: "Dataset not found" })).toBeVisible();
});
