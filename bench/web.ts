/**
 * The web console's device table with 5,000 devices, in Debian's Chromium (playwright-core):
 * the time from clicking "Devices" until the table shows its first page (100 rows and the
 * total), from applying a selector until it shows the first page of the matching half, and from
 * typing a search until it shows the one device that matches (the coordinator filters, searches,
 * sorts and pages; the search box waits 200 ms after typing before it asks), each timed in the
 * page from the action until a MutationObserver sees the result. Baseline, in the
 * same page: ListDevices for every device, in pages of 1,000 as `device ls` reads them (fetch
 * and JSON parse of all of them), what the table cost before it paged. Also printed: the page's own ListDevices call alone. Devices
 * are enrolled directly in the store of an in-process coordinator (two join tokens: group=a,
 * group=b). `npm run bench -- web` (`BENCH_WEB_DEVICES=20000` for another count).
 */
import { randomBytes } from "node:crypto";
import { generateIdentity, newId } from "@flotilla/protocol";
import { SETUP_CODE, startTestCoordinator } from "@flotilla/coordinator/testing";
import { chromium, type Page } from "playwright-core";

const DEVICES = Number(process.env.BENCH_WEB_DEVICES ?? 5000);
const RUNS = 3;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Milliseconds, measured in the page (performance.now), from just before `action` until the page
 * shows what `shown` (a JavaScript expression over the document) says: a MutationObserver
 * notices at once, where polling through playwright would add its own waiting.
 */
async function timed(page: Page, action: () => Promise<unknown>, shown: string): Promise<number> {
  const done = page.evaluate<number>(`new Promise((resolve) => {
    const obs = new MutationObserver(() => {
      if (${shown}) {
        obs.disconnect();
        resolve(performance.now());
      }
    });
    obs.observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
  })`);
  const start = await page.evaluate<number>("performance.now()");
  await action();
  return (await done) - start;
}

/** Whether the device count says `text`. */
const countIs = (text: string) => `document.querySelector('[data-testid="device-count"]')?.textContent === ${JSON.stringify(text)}`;

export async function benchWeb(print: (line: string) => void): Promise<void> {
  // The production limit on message size (the test coordinator's is 1 MiB).
  const t = await startTestCoordinator({ sessionTtlMs: 3600_000, maxMessageBytes: 4 << 20 });
  const browser = await chromium.launch({ executablePath: process.env.FLOTILLA_CHROMIUM ?? "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
  try {
    const owner = await t.login(generateIdentity(), { setupCode: SETUP_CODE });
    const orgId = (await t.coord.store.access.listOrgs())[0]!.id;
    const now = Date.now();
    for (const group of ["a", "b"]) {
      const tokenId = `jt_${group}`;
      await t.coord.store.devices.createJoinToken({ id: tokenId, orgId, secretHash: randomBytes(32).toString("hex"), labels: { group }, usesAllowed: 0, uses: 0, expiresAt: now + 3600_000, autoApprove: true, createdAt: now, revokedAt: null });
    }
    for (let i = 0; i < DEVICES; i++) {
      const name = `dev-${String(i).padStart(5, "0")}`;
      const facts = { hostname: name, osPrettyName: "Debian GNU/Linux 12 (bookworm)", arch: "x86_64", cpuCount: 4 };
      const r = await t.coord.store.devices.enrollDevice(i % 2 ? "jt_b" : "jt_a", { id: `dev_${newId()}`, publicKey: generateIdentity().id, name, facts, agentVersion: "0.1.0", capabilities: [] }, now);
      if (!r.ok) throw new Error(`enrolling ${name}: ${r.reason}`);
    }

    // Logged in through a login link, as an admin with a key would be.
    const link = await fetch(`${t.coord.url}/auth/login-link`, { method: "POST", headers: owner.headers });
    const { token } = (await link.json()) as { token: string };
    const page: Page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    await page.goto(`${t.coord.url}/login-link#${token}`);
    await page.getByRole("heading", { name: "Overview" }).waitFor();

    const api: number[] = [];
    const pageCall: number[] = [];
    const render: number[] = [];
    const selector: number[] = [];
    const search: number[] = [];
    const half = Math.ceil(DEVICES / 2);
    for (let run = 0; run < RUNS; run++) {
      api.push(
        await page.evaluate<number>(`(async () => {
          const csrf = JSON.parse(sessionStorage.getItem("flotilla.session")).csrf;
          const start = performance.now();
          // Every device, in pages of 1,000 as \`device ls\` reads them (one answer of 20,000 would pass the 4 MiB message limit).
          let count = 0;
          let pageToken = "";
          do {
            const res = await fetch("/flotilla.admin.v1.AdminService/ListDevices", { method: "POST", headers: { "content-type": "application/json", "x-flotilla-csrf": csrf }, body: JSON.stringify({ pageSize: 1000, pageToken }) });
            const body = await res.json();
            if (!res.ok) throw new Error("ListDevices answered " + JSON.stringify(body).slice(0, 300));
            // A page may be empty (the one after a full last page); JSON leaves the empty list out.
            count += (body.devices ?? []).length;
            pageToken = body.nextPageToken ?? "";
          } while (pageToken);
          if (count !== ${DEVICES}) throw new Error("ListDevices gave " + count + " devices");
          return performance.now() - start;
        })()`),
      );
      pageCall.push(
        await page.evaluate<number>(`(async () => {
          const csrf = JSON.parse(sessionStorage.getItem("flotilla.session")).csrf;
          const start = performance.now();
          const res = await fetch("/flotilla.admin.v1.AdminService/ListDevices", { method: "POST", headers: { "content-type": "application/json", "x-flotilla-csrf": csrf }, body: JSON.stringify({ orderBy: "name", includeTotal: true, pageSize: 100 }) });
          const body = await res.json();
          if (body.devices?.length !== Math.min(100, ${DEVICES})) throw new Error("ListDevices answered " + JSON.stringify(body).slice(0, 300));
          return performance.now() - start;
        })()`),
      );
      await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Overview" }).click();
      await page.getByRole("heading", { name: "Overview" }).waitFor();
      render.push(
        await timed(
          page,
          () => page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Devices" }).click(),
          `${countIs(`1–${Math.min(100, DEVICES)} of ${DEVICES} devices`)} && document.querySelector('tr[data-device="dev-00000"]')`,
        ),
      );
      await page.getByLabel("Selector").fill("group=a");
      selector.push(await timed(page, () => page.getByRole("button", { name: "Apply" }).click(), countIs(`1–${Math.min(100, half)} of ${half} devices`)));
      search.push(await timed(page, () => page.getByLabel("Search").fill("dev-00042"), `${countIs("1–1 of 1 devices")} && document.querySelector('tr[data-device="dev-00042"]')`));
    }
    const base = median(api);
    print(`web: device table with ${DEVICES} devices (median of ${RUNS}; baseline: every device through ListDevices, fetch + parse in the page, ${base.toFixed(0)} ms)`);
    for (const [what, xs] of [
      ["ListDevices, one page of 100", pageCall],
      ["render the first page", render],
      ["selector (coordinator filters)", selector],
      ["search (coordinator, +200 ms wait)", search],
    ] as const) {
      print(`  ${what.padEnd(32)} ${median(xs).toFixed(0).padStart(6)} ms   ${(median(xs) / base).toFixed(2)}x baseline`);
    }
  } finally {
    await browser.close();
    await t.close();
  }
}
