import { expect, test } from "@playwright/test";
import { SECTIONS, expectSectionPage, register, submitRegister, uniqueEmail, waitForHydration } from "./helpers";

// JavaScript on: the pages hydrate, navigation is client-side, forms use server functions.

test("the register form checks fields as you type", async ({ page }) => {
  await page.goto("/register");
  await waitForHydration(page);
  await page.getByLabel("Password").pressSequentially("short");
  await expect(page.locator("#password-error")).toContainText("at least 10 characters");
  await page.getByLabel("Email").pressSequentially("not-an-email");
  await expect(page.locator("#email-error")).toContainText("name@example.com");
});

test("register → Datasets → all five sections → log out", async ({ page }) => {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const email = uniqueEmail("hydrated");
  await page.goto("/register");
  await waitForHydration(page);
  await submitRegister(page, email);
  await expect(page).toHaveURL(/\/datasets$/);
  await expectSectionPage(page, "Datasets");
  await waitForHydration(page);

  for (const section of SECTIONS) {
    await page.getByRole("navigation", { name: "Sections" }).getByRole("link", { name: section.heading }).click();
    await expect(page).toHaveURL(new RegExp(`${section.path}$`));
    await expectSectionPage(page, section.heading);
    await expect(
      page.getByRole("navigation", { name: "Sections" }).getByRole("link", { name: section.heading }),
    ).toHaveAttribute("aria-current", "page");
  }

  await page.getByRole("link", { name: /Notifications/ }).click();
  await expect(page.getByRole("heading", { name: "No notifications yet" })).toBeVisible();

  await page.getByRole("button", { name: "Log out" }).click();
  await expect(page).toHaveURL(/\/login/);
  await page.goto("/datasets");
  await expect(page).toHaveURL(/\/login/);
  expect(errors).toEqual([]);
});

test("a duplicate email is reported beside the field", async ({ page }) => {
  const email = uniqueEmail("dup");
  await register(page, email);
  await expect(page).toHaveURL(/\/datasets$/);
  await page.context().clearCookies();
  await page.goto("/register");
  await waitForHydration(page);
  await submitRegister(page, email);
  await expect(page.locator("#email-error")).toContainText("already registered");
  await expect(page).toHaveURL(/\/register/);
});

test("create an API token, see it once, use it, revoke it", async ({ page, request }) => {
  await register(page, uniqueEmail("tokens"));
  await expect(page).toHaveURL(/\/datasets$/);
  await page.goto("/settings");
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
