import { expect, test } from "@playwright/test";
import { PASSWORD, SECTIONS, expectSectionPage, register, uniqueEmail } from "./helpers";

// JavaScript is off in this project: every page must be complete server-rendered HTML, and
// the account forms must work as plain form posts.

test("login and register pages render without JavaScript", async ({ page }) => {
  await page.goto("/login");
  await expect(page.getByRole("heading", { name: "Log in" })).toBeVisible();
  await expect(page.getByLabel("Email")).toBeVisible();
  await page.goto("/register");
  await expect(page.getByRole("heading", { name: "Create your account" })).toBeVisible();
});

test("app pages redirect to login when signed out", async ({ page }) => {
  await page.goto("/jobs");
  await expect(page).toHaveURL(/\/login\?next=%2Fjobs/);
});

test("register, read every section, log out, log back in — all without JavaScript", async ({ page }) => {
  const email = uniqueEmail("ssr");
  await register(page, email);
  await expect(page).toHaveURL(/\/$/);
  for (const section of SECTIONS) {
    await page.goto(section.path);
    await expectSectionPage(page, section.heading);
    // Honest empty states, server-rendered.
    await expect(page.locator("section.empty h2")).toBeVisible();
  }
  await expect(page.getByText(email)).toBeVisible();
  await page.goto("/settings");
  await expect(page.getByRole("heading", { level: 1, name: "Settings" })).toBeVisible();
  // The monthly budget and the time zone, saved by a plain form post.
  await expect(page.locator(".spend-summary")).toContainText("of $100.00");
  await page.getByLabel("Monthly budget").fill("250");
  await page.getByLabel("Time zone").fill("Europe/Paris");
  await page.getByRole("button", { name: "Save" }).click();
  await expect(page.locator(".spend-summary")).toContainText("$0.00 spent of $250.00");
  await expect(page.locator(".spend-summary")).toContainText("(Europe/Paris)");
  await page.getByLabel("Name").fill("no-js token");
  await page.getByRole("button", { name: "Create token" }).click();
  await expect(page.getByRole("cell", { name: "no-js token" })).toBeVisible();
  await page.getByRole("button", { name: "Log out" }).click();
  await expect(page).toHaveURL(/\/login/);
  await page.goto("/datasets");
  await expect(page).toHaveURL(/\/login/);

  // A wrong password is reported on the page.
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("wrong password!!");
  await page.getByRole("button", { name: "Log in" }).click();
  await expect(page.getByRole("alert")).toContainText("Invalid email or password");

  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  // Back where the login was asked for.
  await expect(page).toHaveURL(/\/datasets$/);
});

test("unknown pages answer 404 with a readable page", async ({ page }) => {
  const response = await page.goto("/no-such-page");
  expect(response?.status()).toBe(404);
  await expect(page.getByRole("heading", { name: "Page not found" })).toBeVisible();
});
