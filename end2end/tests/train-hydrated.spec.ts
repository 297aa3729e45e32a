import { expect, test } from "@playwright/test";
import * as fs from "node:fs";
import { cspViolations, readyDataset, register, uniqueEmail, waitForHydration } from "./helpers";

test("the estimate updates in the browser with no request; Start lands on the new job, which trains live to the end", async ({ page }) => {
  test.setTimeout(240_000);
  const csp = cspViolations(page);
  // Record every value the job page's progress bar takes, from the first paint on.
  await page.addInitScript(() => {
    const seen: string[] = [];
    (window as any).__progress = seen;
    new MutationObserver(() => {
      const bar = document.querySelector(".job-status progress");
      const value = bar?.getAttribute("value");
      if (value != null && seen[seen.length - 1] !== value) seen.push(value);
    }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ["value"] });
  });
  await register(page, uniqueEmail("train"));
  // A ready dataset, uploaded through the API with this session.
  await readyDataset(page, "coach");

  await page.goto("/train");
  await waitForHydration(page);
  await page.waitForLoadState("networkidle");
  const cost = page.locator("#estimate-cost");
  await expect(cost).toContainText("$");
  const steps = page.locator("#estimate-steps");
  const before = await steps.textContent();

  const requests: string[] = [];
  page.on("request", (r) => requests.push(r.url()));
  await page.getByText("Advanced settings").click();
  await page.locator("#batch_size").fill("1");
  await expect(steps).not.toHaveText(before!);
  await page.getByText("Quality", { exact: true }).click();
  // The demo model's Quality preset (its presets take more steps than a 7B model's).
  await expect(page.locator("#epochs")).toHaveValue("16");
  expect(requests, "the estimate is computed in the browser").toEqual([]);

  // A paid GPU needs a budget cap: it is prefilled from the high estimate × the server's margin.
  const budget = page.locator("#budget");
  await expect(budget).toHaveValue("");
  await page.locator("#gpu").selectOption("L4");
  await expect(budget).toHaveValue(/^\d+\.\d\d$/);
  await page.locator("#gpu").selectOption("local");
  await expect(budget).toHaveValue("");

  // A bad value is refused beside its field, as the server would.
  await page.locator("#epochs").fill("50");
  await expect(page.getByText("Use a whole number from 1 to 20.")).toBeVisible();
  await expect(page.getByRole("button", { name: "Start training" })).toBeDisabled();
  await page.locator("#epochs").fill("1");

  await page.getByRole("button", { name: "Start training" }).click();
  await expect(page).toHaveURL(/\/jobs\/[0-9a-f-]{36}$/);
  await expect(page.getByRole("heading", { level: 1, name: "Training on coach" })).toBeVisible();

  // The bell's unread count, before the job ends (it follows the page's live stream).
  const bell = page.locator(".topbar .bell");
  const unread = async () => Number((await bell.getAttribute("aria-label"))?.match(/(\d+) unread/)?.[1] ?? 0);
  const unreadWhileTraining = await unread();

  // The job trains on the demo model in the local executor; the page follows it live.
  const badge = page.locator(".job-status .badge");
  await expect(badge).toHaveText("completed", { timeout: 180_000 });
  // "Training finished" reached the bell without a reload.
  await expect.poll(unread).toBeGreaterThan(unreadWhileTraining);
  await expect(page.locator(".job-status progress")).toHaveAttribute("value", "100");
  const progress: string[] = await page.evaluate(() => (window as any).__progress);
  expect(progress.map(Number).some((v) => v > 0 && v < 100), `the bar moved through ${progress}`).toBe(true);
  expect(progress[progress.length - 1]).toBe("100");
  await expect(page.locator("#loss-chart canvas")).toHaveCount(1);
  await expect(page.locator(".job-loss")).not.toHaveText("—");
  await expect(page.locator(".job-steps")).toContainText(/step (\d+) of \1/);
  await expect(page.getByText("Status: completed")).toBeVisible();

  // The job links to its model, live: rated, with samples and its card; a file downloads.
  await page.getByRole("link", { name: "Open the model" }).click();
  await expect(page).toHaveURL(/\/models\/[0-9a-f-]{36}$/);
  await waitForHydration(page);
  await expect(page.locator(".model-rating .stars")).toHaveAttribute("aria-label", /[1-5] of 5 stars/);
  await expect(page.locator(".model-explanation")).toContainText(/^[1-5] stars?: loss (fell|rose) \d+%/);
  await expect(page.locator(".sample").first()).toBeVisible();
  await expect(page.locator(".model-card-text")).toContainText("library_name: peft");
  await expect(page.locator("#model-loss-chart canvas")).toHaveCount(1);
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("link", { name: "adapter_config.json" }).click(),
  ]);
  expect(download.suggestedFilename()).toBe("adapter_config.json");
  expect(JSON.parse(fs.readFileSync(await download.path(), "utf8")).peft_type).toBe("LORA");
  // Renamed in place, kept on reload.
  await page.locator("#model-name").fill("coach v1");
  await page.getByRole("button", { name: "Save" }).click();
  await expect(page.getByRole("status")).toHaveText("Saved.");
  await page.goto("/models");
  await expect(page.getByRole("link", { name: "coach v1" })).toBeVisible();

  // Its costs are on the Costs page, charted.
  await page.goto("/costs");
  await waitForHydration(page);
  await expect(page.locator(".cost-jobs").getByRole("link", { name: "coach" })).toBeVisible();
  await expect(page.locator("#cost-day-chart canvas")).toHaveCount(1);
  await expect(page.locator("#cost-gpu-chart canvas")).toHaveCount(1);
  // Charts, live streams and the WASM all run under the page's Content-Security-Policy.
  expect(csp).toEqual([]);

  // The Jobs list links to it, completed.
  await page.goto("/jobs");
  await expect(page.getByRole("link", { name: "coach" })).toBeVisible();
  await expect(page.locator(".jobs-table .badge").first()).toHaveText("completed");
});

test("a cancelled job's retry continues from its checkpoint, and the page says so", async ({ page }) => {
  test.setTimeout(240_000);
  await register(page, uniqueEmail("resume"));
  const dataset = await readyDataset(page, "resume");
  const origin = new URL(page.url()).origin;
  const catalog = await (await page.request.get("/api/catalog")).json();
  // Long enough to be cancelled mid-run (the e2e server saves a checkpoint every second).
  const hyperparameters = {
    ...catalog.data.presets.fast, quantization: "none", epochs: 12, batch_size: 4,
    gradient_accumulation_steps: 1, max_seq_len: 256,
  };
  const created = await page.request.post("/api/jobs", {
    headers: { Origin: origin },
    data: { dataset_id: dataset, base_model: "tiny-random-llama", preset: "custom", hyperparameters, gpu_type: "local", gpu_count: 1 },
  });
  expect(created.status()).toBe(201);
  const id = (await created.json()).data.job.id;

  await page.goto(`/jobs/${id}`);
  await waitForHydration(page);
  // The checkpoint's step appears live while the job trains.
  await expect(page.locator(".job-checkpoint")).toContainText(/checkpoint at step \d+/, { timeout: 180_000 });
  page.once("dialog", (dialog) => dialog.accept());
  const cancelAnswer = page.waitForResponse((r) => r.url().includes("/rpc/cancel_job"));
  await page.getByRole("button", { name: "Cancel job" }).click();
  expect((await cancelAnswer).status()).toBe(200);
  const badge = page.locator(".job-status .badge");
  // If the page never shows the end, say whether the job ended (the page missed it) or not.
  await expect(badge)
    .toHaveText("cancelled", { timeout: 60_000 })
    .catch(async (error) => {
      const job = await (await page.request.get(`/api/jobs/${id}`)).text();
      throw new Error(`${error}\nthe job as the API sees it: ${job}`);
    });
  const retryFrom = page.locator(".job-retry-from");
  await expect(retryFrom).toContainText(/Retry continues from the checkpoint at step \d+\./);
  const step = (await retryFrom.textContent())!.match(/step (\d+)/)![1];

  await page.getByRole("button", { name: "Retry" }).click();
  await expect(page.getByText(`Retrying from the checkpoint at step ${step}.`)).toBeVisible();
  await expect(badge).toHaveText("completed", { timeout: 180_000 });
  // The worker may have saved a newer checkpoint while the cancel reached it: it resumes there.
  const resumed = page.locator(".job-resumed");
  await expect(resumed).toContainText(/Resumed from step \d+:/);
  const from = Number((await resumed.textContent())!.match(/step (\d+)/)![1]);
  expect(from).toBeGreaterThanOrEqual(Number(step));
  await expect(page.getByText(new RegExp(`resumed from the checkpoint at step ${from}`))).toBeVisible();
  await expect(page.locator(".job-steps")).toContainText(/step (\d+) of \1/);
});
