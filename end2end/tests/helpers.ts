import { expect, Page } from "@playwright/test";

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
  await expect(page).toHaveURL(/\/datasets$/);
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
