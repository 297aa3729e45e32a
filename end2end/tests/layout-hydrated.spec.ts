import { expect, Page, test } from "@playwright/test";
import { finishedDemoJob, readyDataset, register, uniqueEmail, waitForHydration } from "./helpers";

/** How far the page reaches beyond the viewport's width, in CSS pixels (0: it fits), and the
 *  widest elements that stick out, to say what to fix. */
async function overflow(page: Page): Promise<{ by: number; culprits: string[] }> {
  return page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const by = document.documentElement.scrollWidth - width;
    const culprits = [...document.querySelectorAll("body *")]
      .filter((e) => e.getBoundingClientRect().right > width + 1)
      .slice(0, 5)
      .map((e) => `${e.tagName.toLowerCase()}.${[...e.classList].join(".")} → ${Math.round(e.getBoundingClientRect().right)}px`);
    return { by, culprits };
  });
}

// Every page, at a laptop's and a phone's width: none scrolls sideways. And every page's WASM
// bundle has the page's islands (Leptos warns of an island it cannot find), with no error.
test("no page overflows the viewport at 1280 px or at 390 px", async ({ page }) => {
  test.setTimeout(240_000);
  const problems: string[] = [];
  page.on("console", (m) => {
    if (/Could not find WASM function|panicked at/.test(m.text())) problems.push(`${page.url()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`${page.url()}: ${e.message}`));
  await register(page, uniqueEmail("layout"));
  const dataset = await readyDataset(page, "layout");
  const { job, model } = await finishedDemoJob(page, dataset);

  const pages = [
    "/",
    "/datasets",
    `/datasets/${dataset}`,
    "/train",
    "/jobs",
    `/jobs/${job}`,
    "/models",
    `/models/${model}`,
    "/costs",
    "/notifications",
    "/settings",
    "/docs/api",
  ];
  const wide: string[] = [];
  for (const width of [1280, 390]) {
    await page.setViewportSize({ width, height: 900 });
    for (const path of pages) {
      await page.goto(path);
      await waitForHydration(page);
      const { by, culprits } = await overflow(page);
      if (by > 0) wide.push(`${path} at ${width} px: ${by} px too wide (${culprits.join("; ")})`);
    }
  }
  // Signed out: the login and register pages.
  await page.context().clearCookies();
  for (const width of [1280, 390]) {
    await page.setViewportSize({ width, height: 900 });
    for (const path of ["/login", "/register"]) {
      await page.goto(path);
      await waitForHydration(page);
      const { by, culprits } = await overflow(page);
      if (by > 0) wide.push(`${path} at ${width} px: ${by} px too wide (${culprits.join("; ")})`);
    }
  }
  expect(wide, wide.join("\n")).toEqual([]);
  expect(problems, problems.join("\n")).toEqual([]);
});
