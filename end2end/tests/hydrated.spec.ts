import { expect, test } from "@playwright/test";
import { SECTIONS, cspViolations, expectSectionPage, readyDataset, register, submitRegister, uniqueEmail, waitForHydration } from "./helpers";

// JavaScript on: each page loads from the server and hydrates its islands (the interactive
// parts); their forms call server functions in place.

test("the register form checks fields as you type", async ({ page }) => {
  await page.goto("/register");
  await waitForHydration(page);
  await page.getByLabel("Password").pressSequentially("short");
  await expect(page.locator("#password-error")).toContainText("at least 10 characters");
  await page.getByLabel("Email").pressSequentially("not-an-email");
  await expect(page.locator("#email-error")).toContainText("name@example.com");
});

test("register → Overview → all five sections → log out", async ({ page }) => {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const csp = cspViolations(page);
  const email = uniqueEmail("hydrated");
  await page.goto("/register");
  await waitForHydration(page);
  await submitRegister(page, email);
  await expect(page).toHaveURL(/\/$/);
  await expectSectionPage(page, "Overview");
  await waitForHydration(page);

  for (const section of SECTIONS) {
    await page.getByRole("navigation", { name: "Sections" }).getByRole("link", { name: section.heading }).click();
    await expect(page).toHaveURL(new RegExp(`${section.path}$`));
    await expectSectionPage(page, section.heading);
    await expect(
      page.getByRole("navigation", { name: "Sections" }).getByRole("link", { name: section.heading }),
    ).toHaveAttribute("aria-current", "page");
  }

  // The bell opens its panel in the browser (once this page's islands are hydrated); the panel
  // leads to the Notifications page.
  await waitForHydration(page);
  await page.getByRole("link", { name: /^Notifications, / }).click();
  const panel = page.getByRole("dialog", { name: "Latest notifications" });
  await expect(panel.getByText("No notifications yet.")).toBeVisible();
  await panel.getByRole("link", { name: "All notifications" }).click();
  await expect(page.getByRole("heading", { name: "No notifications yet" })).toBeVisible();
  await expect(panel).toHaveCount(0);

  await page.getByRole("button", { name: "Log out" }).click();
  await expect(page).toHaveURL(/\/login/);
  await page.goto("/datasets");
  await expect(page).toHaveURL(/\/login/);
  expect(errors).toEqual([]);
  expect(csp, "nothing the page runs is blocked by its policy").toEqual([]);
});

test("a duplicate email is reported beside the field", async ({ page }) => {
  const email = uniqueEmail("dup");
  await register(page, email);
  await expect(page).toHaveURL(/\/$/);
  await page.context().clearCookies();
  await page.goto("/register");
  await waitForHydration(page);
  await submitRegister(page, email);
  await expect(page.locator("#email-error")).toContainText("already registered");
  await expect(page).toHaveURL(/\/register/);
});

test("create an API token, see it once, use it, revoke it", async ({ page, request }) => {
  await register(page, uniqueEmail("tokens"));
  await expect(page).toHaveURL(/\/$/);
  await page.goto("/settings");
  await waitForHydration(page);
  // The spending form says what is wrong beside the field, and saves.
  await page.getByLabel("Time zone").fill("Mars/Olympus");
  await page.getByRole("button", { name: "Save" }).click();
  await expect(page.locator("#time-zone-error")).toContainText("Mars/Olympus is not a time zone");
  await page.getByRole("button", { name: /^Use this browser's/ }).click();
  await page.getByLabel("Monthly budget").fill("40");
  await page.getByRole("button", { name: "Save" }).click();
  await expect(page.getByText("Saved.")).toBeVisible();
  await expect(page.locator(".spend-summary")).toContainText("of $40.00");
  await waitForHydration(page);
  await expect(page.getByRole("heading", { name: "No API tokens" })).toBeVisible();
  await page.getByLabel("Name").fill("ci");
  await page.getByRole("button", { name: "Create token" }).click();
  const secret = page.locator(".token-secret");
  await expect(secret).toContainText("lpt_");
  const token = (await secret.textContent())!.trim();
  await expect(page.getByRole("cell", { name: "ci", exact: true })).toBeVisible();

  // The token works for scripts.
  const me = await request.get("/api/auth/me", { headers: { Authorization: `Bearer ${token}` } });
  expect(me.status()).toBe(200);

  // Revoking asks first, then the token stops working.
  await page.getByLabel("Revoke token ci").click();
  await page.getByRole("button", { name: "Yes, revoke" }).click();
  await expect(page.getByRole("heading", { name: "No API tokens" })).toBeVisible();
  const after = await request.get("/api/auth/me", { headers: { Authorization: `Bearer ${token}` } });
  expect(after.status()).toBe(401);
});

test("a webhook: an internal URL refused in place, then a test event listed with what happened", async ({ page }) => {
  await register(page, uniqueEmail("webhook"));
  await expect(page).toHaveURL(/\/$/);
  await page.goto("/settings");
  await waitForHydration(page);
  await expect(page.getByRole("heading", { name: "No deliveries yet" })).toBeVisible();
  // This server does not allow internal targets (WEBHOOK_ALLOW_PRIVATE is off).
  await page.getByLabel("URL").fill("http://127.0.0.1:9/hook");
  await page.getByRole("button", { name: "Set webhook" }).click();
  await expect(page.locator("#webhook-url-error")).toContainText("WEBHOOK_ALLOW_PRIVATE");
  // A name that does not resolve (yet) is accepted; deliveries say why they wait.
  await page.getByLabel("URL").fill("https://hooks.invalid/lora");
  await page.getByRole("button", { name: "Set webhook" }).click();
  await expect(page.locator(".webhook-secret")).toContainText("whsec_");
  await page.getByRole("button", { name: "Send a test event" }).click();
  await expect(page.getByText("A ping event is queued")).toBeVisible();
  await expect(async () => {
    await page.getByRole("button", { name: "Refresh deliveries" }).click();
    await expect(page.locator(".webhook-deliveries")).toContainText("does not resolve", { timeout: 1000 });
  }).toPass({ timeout: 30_000 });
  await expect(page.locator(".webhook-deliveries")).toContainText("ping");
  await page.getByText("Remove webhook").click();
  await page.getByRole("button", { name: "Yes, remove" }).click();
  await expect(page.locator(".webhook-secret")).toHaveCount(0);
});

test("the bell's count rises live while the page stays open and falls on mark-read", async ({ page }) => {
  await register(page, uniqueEmail("bell"));
  await waitForHydration(page);
  const bell = page.getByRole("link", { name: /^Notifications, / });
  await expect(bell).toHaveAttribute("aria-label", "Notifications, none unread");
  const opened = page.url();
  // A dataset validated in the background (through the API): the open page hears of it.
  await readyDataset(page, "bell-data");
  await expect(bell).toHaveAttribute("aria-label", "Notifications, 1 unread");
  expect(page.url()).toBe(opened);

  await bell.click();
  const panel = page.getByRole("dialog", { name: "Latest notifications" });
  await expect(panel.getByRole("link", { name: 'Dataset "bell-data" is ready' })).toBeVisible();
  await panel.getByRole("button", { name: "Mark read" }).click();
  await expect(bell).toHaveAttribute("aria-label", "Notifications, none unread");
  await expect(panel.getByRole("button", { name: "Mark read" })).toHaveCount(0);
  await page.keyboard.press("Escape");
  await expect(panel).toHaveCount(0);
});

test("the overview follows a running job live to its end", async ({ page }) => {
  await register(page, uniqueEmail("overview"));
  await waitForHydration(page);
  const origin = new URL(page.url()).origin;
  const dataset = await readyDataset(page, "overview-data");
  const catalog = await (await page.request.get("/api/catalog")).json();
  const job = await page.request.post("/api/jobs", {
    headers: { Origin: origin },
    data: {
      dataset_id: dataset, base_model: "tiny-random-llama", preset: "fast",
      hyperparameters: { ...catalog.data.presets.fast, quantization: "none" },
      gpu_type: "local", gpu_count: 1,
    },
  });
  expect(job.status()).toBe(201);
  await page.goto("/");
  await waitForHydration(page);
  const row = page.locator(".overview-job").filter({ hasText: "overview-data" });
  await expect(row).toBeVisible();
  // Progress and the ending arrive over the live stream: no reload.
  await expect(row.locator(".job-progress")).toHaveText("100%", { timeout: 180_000 });
  await expect(row.locator(".badge")).toHaveText("completed", { timeout: 60_000 });
});
