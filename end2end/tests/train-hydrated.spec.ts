import { expect, test } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import { register, uniqueEmail } from "./helpers";

const SAMPLES = path.resolve(__dirname, "../../../shared/datasets");

test("the estimate updates in the browser with no request; Start lands on the new job", async ({ page }) => {
  await register(page, uniqueEmail("train"));
  // A ready dataset, uploaded through the API with this session.
  const bytes = fs.readFileSync(path.join(SAMPLES, "openai-chat.jsonl"));
  const origin = new URL(page.url()).origin;
  const created = await (
    await page.request.post("/api/datasets", {
      headers: { Origin: origin },
      data: { name: "coach", file_name: "coach.jsonl", file_size: bytes.length },
    })
  ).json();
  expect((await page.request.put(created.data.uploadUrl, { data: bytes })).status()).toBe(200);
  const id = created.data.dataset.id;
  await page.request.post(`/api/datasets/${id}/confirm`, { headers: { Origin: origin } });
  await expect
    .poll(async () => (await (await page.request.get(`/api/datasets/${id}`)).json()).data.status)
    .toBe("ready");

  await page.goto("/train");
  await page.waitForFunction(() => performance.getEntriesByType("resource").some((r) => r.name.endsWith(".wasm")));
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
  await expect(page.locator("#epochs")).toHaveValue("5");
  expect(requests, "the estimate is computed in the browser").toEqual([]);

  // A bad value is refused beside its field, as the server would.
  await page.locator("#epochs").fill("50");
  await expect(page.getByText("Use a whole number from 1 to 20.")).toBeVisible();
  await expect(page.getByRole("button", { name: "Start training" })).toBeDisabled();
  await page.locator("#epochs").fill("1");

  await page.getByRole("button", { name: "Start training" }).click();
  await expect(page).toHaveURL(/\/jobs$/);
  await expect(page.getByRole("cell", { name: "coach" })).toBeVisible();
  await expect(page.getByRole("cell", { name: "tiny-random-llama" })).toBeVisible();
});
