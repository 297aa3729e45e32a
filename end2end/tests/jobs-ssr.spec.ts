import { expect, test } from "@playwright/test";
import { expectNotHydrated, finishedDemoJob, readyDataset, register, uniqueEmail } from "./helpers";

// JavaScript off: a job's page and the Jobs list are complete server-rendered HTML.

test("the job page and the Jobs list render without JavaScript", async ({ page, browser }) => {
  await register(page, uniqueEmail("jobs-ssr"));
  const origin = new URL(page.url()).origin;
  const dataset = await readyDataset(page, "support");
  // The bell counts it; marking it read works without JavaScript (a form post).
  await page.goto("/notifications");
  await expect(page.getByRole("link", { name: "Notifications, 1 unread" })).toBeVisible();
  await page.getByRole("button", { name: "Mark read" }).click();
  await expect(page.getByRole("link", { name: "Notifications, none unread" })).toBeVisible();
  await expect(page.getByRole("button", { name: "Mark read" })).toHaveCount(0);
  const catalog = await (await page.request.get("/api/catalog")).json();
  const hyperparameters = { ...catalog.data.presets.fast, quantization: "none" };
  const job = await page.request.post("/api/jobs", {
    headers: { Origin: origin },
    data: {
      dataset_id: dataset, base_model: "tiny-random-llama", preset: "fast",
      hyperparameters, gpu_type: "local", gpu_count: 1,
    },
  });
  expect(job.status()).toBe(201);
  const id = (await job.json()).data.job.id;

  await page.goto(`/jobs/${id}`);
  await expect(page.getByRole("heading", { level: 1, name: "Training on support" })).toBeVisible();
  await expect(page.locator(".job-status progress")).toHaveCount(1);
  await expect(page.getByRole("heading", { name: "Event log" })).toBeVisible();
  await expect(page.getByText(/Status: queued/)).toBeVisible();
  await expectNotHydrated(page);

  // The overview lists it under "Training now", with its progress.
  await page.goto("/");
  await expect(page.getByRole("heading", { level: 1, name: "Overview" })).toBeVisible();
  const row = page.locator(".overview-job").filter({ hasText: "support" });
  await expect(row.getByRole("link", { name: "support" })).toHaveAttribute("href", `/jobs/${id}`);
  await expect(row.getByRole("progressbar")).toHaveCount(1);
  await expect(page.getByText(/spent of|of \$[0-9.]+ budget/).first()).toBeVisible();

  await page.goto("/jobs");
  await expect(page.getByRole("link", { name: "support" })).toHaveAttribute("href", `/jobs/${id}`);
  // The page size is a plain link: 25 rows by default, 50 or 100 on request.
  await expect(page.getByRole("link", { name: "25 rows per page" })).toHaveAttribute("aria-current", "page");
  await page.getByRole("link", { name: "100 rows per page" }).click();
  await expect(page).toHaveURL(/per_page=100/);
  await expect(page.getByRole("link", { name: "100 rows per page" })).toHaveAttribute("aria-current", "page");
  await expect(page.getByRole("link", { name: "support" })).toBeVisible();
  await page.goto("/jobs?status=failed");
  await expect(page.getByText("No jobs with this status")).toBeVisible();

  // An id that is nobody's job is not found.
  await page.goto(`/jobs/00000000-0000-0000-0000-000000000000`);
  await expect(page.getByRole("heading", { level: 1, name: "Job not found" })).toBeVisible();

  // Someone else's real job is not found either: not its page, not its API, not its stream.
  const stranger = await browser.newContext({ javaScriptEnabled: false });
  const other = await stranger.newPage();
  await register(other, uniqueEmail("stranger"));
  await other.goto(`/jobs/${id}`);
  await expect(other.getByRole("heading", { level: 1, name: "Job not found" })).toBeVisible();
  await expect(other.getByText("Training on support")).toHaveCount(0);
  expect((await other.request.get(`/api/jobs/${id}`)).status()).toBe(404);
  expect((await other.request.get(`/api/jobs/${id}/events`)).status()).toBe(404);
  const strangerOrigin = new URL(other.url()).origin;
  expect(
    (await other.request.post(`/api/jobs/${id}/cancel`, { headers: { Origin: strangerOrigin } })).status(),
  ).toBe(404);
  await stranger.close();
});

test("a finished demo job's model page renders without JavaScript, and its bundle downloads", async ({ page, browser }) => {
  test.setTimeout(240_000);
  await register(page, uniqueEmail("models-ssr"));
  await page.goto("/models");
  await expect(page.getByText("No models yet")).toBeVisible();
  const dataset = await readyDataset(page, "helpdesk");
  const { job, model } = await finishedDemoJob(page, dataset);

  await page.goto("/models");
  await expect(page.locator(".model-card .stars")).toHaveCount(1);
  await page.getByRole("link", { name: /helpdesk/ }).click();
  await expect(page).toHaveURL(`/models/${model}`);
  await expect(page.locator(".model-explanation")).toContainText(/^[1-5] stars?: /);
  await expect(page.locator(".sample").first()).toBeVisible();
  await expect(page.locator(".model-card-text")).toContainText("PeftModel.from_pretrained");
  await expectNotHydrated(page);
  const bundle = await page.request.get(`/api/models/${model}/bundle`);
  expect(bundle.status()).toBe(200);
  expect(bundle.headers()["content-disposition"]).toMatch(/^attachment; filename=".+\.tar\.gz"$/);
  const bytes = await bundle.body();
  expect([bytes[0], bytes[1]]).toEqual([0x1f, 0x8b]);

  // The job's cost is on the Costs page, and its CSV export lists it.
  await page.goto("/costs?period=week");
  await expect(page.locator(".cost-jobs").getByRole("link", { name: "helpdesk" })).toBeVisible();
  const csv = await page.request.get(await page.getByRole("link", { name: "Export CSV" }).getAttribute("href") as string);
  expect(await csv.text()).toContain(job);

  // Someone else gets "not found" for its page and its bundle.
  const stranger = await browser.newContext({ javaScriptEnabled: false });
  const other = await stranger.newPage();
  await register(other, uniqueEmail("model-stranger"));
  await other.goto(`/models/${model}`);
  await expect(other.getByRole("heading", { level: 1, name: "Model not found" })).toBeVisible();
  expect((await other.request.get(`/api/models/${model}/bundle`)).status()).toBe(404);
  await stranger.close();
});
