import { expect, test } from "@playwright/test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { register, uniqueEmail, waitForHydration, SAMPLES } from "./helpers";

/** A valid OpenAI chat JSONL of about `megabytes` MB. */
function chatFile(megabytes: number): string {
  const line = JSON.stringify({
    messages: [
      { role: "user", content: "How do I start an emergency fund? ".repeat(20) },
      { role: "assistant", content: "Set aside a small amount every week. ".repeat(40) },
    ],
  });
  const lines = Math.ceil((megabytes * 1_000_000) / (line.length + 1));
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "lp-e2e-")), "coach.jsonl");
  fs.writeFileSync(file, Array(lines).fill(line).join("\n"));
  return file;
}

async function hydrated(page: import("@playwright/test").Page) {
  await waitForHydration(page);
  await page.waitForLoadState("networkidle");
}

test("upload with a live progress bar, see the verdict, open the detail page", async ({ page, context }) => {
  await register(page, uniqueEmail("upload"));
  await page.goto("/datasets");
  await expect(page.getByRole("heading", { name: "No datasets yet" })).toBeVisible();
  await page.getByRole("link", { name: "Upload dataset" }).click();
  await expect(page).toHaveURL(/\/datasets\/new$/);
  await hydrated(page);

  // Slow the upload down (2 MB/s) so the progress bar is seen moving.
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false,
    latency: 0,
    downloadThroughput: -1,
    uploadThroughput: 2_000_000,
  });
  await page.setInputFiles("#file", chatFile(4));
  await expect(page.getByLabel("Name")).toHaveValue("coach");
  await page.getByRole("button", { name: "Upload and validate" }).click();
  const bar = page.getByRole("progressbar", { name: "Upload progress" });
  await expect(bar).toBeVisible();
  await expect(page.locator(".upload-progress")).toContainText(/of 4\.\d MB · .*\/s · .* left/);
  await expect(page.getByRole("button", { name: "Cancel upload" })).toBeVisible();
  await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });

  await expect(page).toHaveURL(/\/datasets\/[0-9a-f-]{36}$/, { timeout: 30_000 });
  await expect(page.getByText("Ready to train.")).toBeVisible({ timeout: 30_000 });
  await expect(page.getByText("Detected format: OpenAI chat.")).toBeVisible();
  await expect(page.locator(".stat", { hasText: "Examples" })).toContainText(/\d/);
  // The histogram is drawn with charming (ECharts, loaded only on this page) into a canvas.
  await expect(page.locator("#token-histogram.drawn canvas")).toBeVisible({ timeout: 15_000 });
  await expect(page.locator(".bubble-assistant").first()).toContainText("Set aside a small amount");

  // The list shows it, and the bell counts the notification.
  await page.getByRole("navigation", { name: "Sections" }).getByRole("link", { name: "Datasets" }).click();
  await expect(page.getByRole("link", { name: "coach" })).toBeVisible();
  await expect(page.locator("tbody tr").first()).toContainText("Ready");
});

test("a broken file shows its problems with line numbers; delete asks first", async ({ page }) => {
  await register(page, uniqueEmail("broken"));
  await page.goto("/datasets/new");
  await hydrated(page);
  await page.setInputFiles("#file", path.join(SAMPLES, "broken-missing-assistant.jsonl"));
  await page.getByRole("button", { name: "Upload and validate" }).click();
  await expect(page.getByText("This file has problems.")).toBeVisible({ timeout: 30_000 });
  const row = page.locator("table.problems tbody tr").first();
  await expect(row.locator("td").first()).toHaveText("4");
  await expect(row).toContainText("missing_assistant");
  await expect(row).toContainText("Add the reply the model should learn");

  await page.getByText("Delete", { exact: true }).click();
  await page.getByRole("button", { name: "Yes, delete" }).click();
  await expect(page).toHaveURL(/\/datasets$/);
  await expect(page.getByRole("heading", { name: "No datasets yet" })).toBeVisible();
});

test("the upload form checks the file before sending anything", async ({ page }) => {
  await register(page, uniqueEmail("rules"));
  await page.goto("/datasets/new");
  await hydrated(page);
  await page.getByRole("button", { name: "Upload and validate" }).click();
  await expect(page.locator("#file-error")).toContainText("Choose a .json or .jsonl file");
  const csv = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "lp-e2e-")), "data.csv");
  fs.writeFileSync(csv, "a,b\n1,2\n");
  await page.setInputFiles("#file", csv);
  await page.getByRole("button", { name: "Upload and validate" }).click();
  await expect(page.locator("#file-name-error")).toContainText("Upload a .json or .jsonl file");
});
