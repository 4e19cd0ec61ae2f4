import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ADMIN_PASSWORD, authHeaders, Stack } from './support/stack.js';
import { waitFor } from './support/wait.js';

// A person with a browser, through nginx, against the stack PM2 runs. Screenshots of every page go
// to test-output/screenshots/.

const SHOTS = path.join(__dirname, '..', 'test-output', 'screenshots');
let stack: Stack;
let browser: Browser;
let page: Page;

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  stack = await Stack.create({ instances: 2, proxy: true });
  await stack.start();
  // enough entries for two pages of 50, in three types
  for (let batch = 0; batch < 6; batch += 1) {
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        fetch(stack.url('/api/logs'), {
          method: 'POST',
          headers: authHeaders({ 'content-type': 'application/json' }),
          body: JSON.stringify({ stype: ['app', 'error', 'security'][i % 3], description: `browser entry ${batch * 20 + i}` }),
        }).then((r) => assert.equal(r.status, 201)),
      ),
    );
  }
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

const shot = (name: string) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

describe('the console in a browser', { timeout: 180_000 }, () => {
  test('when a person opens the console, then they must log in, and then see both instances', async () => {
    await page.goto(stack.url('/console'));
    assert.match(page.url(), /\/console\/login$/);
    await shot('01-login');
    await page.getByLabel('Admin password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.waitForURL(/\/console$/);
    const rows = page.locator('#instances tbody tr');
    assert.equal(await rows.count(), 2);
    const web = await stack.web();
    const text = await page.locator('#instances').innerText();
    for (const p of web.values()) assert.ok(text.includes(String(p.pid)), `pid ${p.pid} shown`);
    await shot('02-instances');
  });

  test('when a worker is killed, then the instances page shows its replacement and the starts page its restart', async () => {
    const victim = (await stack.web()).get(1)!;
    process.kill(victim.pid, 'SIGKILL');
    const replacement = await waitFor('instance 1 replaced', async () => {
      const p = (await stack.web()).get(1);
      return p && p.pid !== victim.pid ? p : undefined;
    });
    // the page refreshes itself from /api/instances every 2 s
    await page.waitForFunction(
      (pid) => document.querySelector('#instances')?.textContent?.includes(String(pid)) ?? false,
      replacement.pid,
      { timeout: 15_000 },
    );
    assert.ok(!(await page.locator('#instances').innerText()).includes(String(victim.pid)), 'the dead pid is gone');
    await page.getByRole('link', { name: 'Starts' }).click();
    await page.waitForURL(/\/console\/starts$/);
    const restarted = page.locator('li.event-restarted');
    assert.equal(await restarted.count(), 1);
    assert.match(await restarted.innerText(), new RegExp(`instance 1 restarted \\(pid ${replacement.pid}\\)`));
    assert.equal(await page.locator('section.start').count(), 1, 'still one start');
    await shot('03-starts');
  });

  test('when logs are filtered and paged, then only matching entries come, page after page', async () => {
    await page.getByRole('link', { name: 'Logs' }).click();
    await page.waitForURL(/\/console\/logs$/);
    assert.equal(await page.locator('#logs tbody tr').count(), 50);
    assert.equal(await page.locator('svg.chart rect').count() > 0, true, 'the chart has bars');
    await shot('04-logs');
    await page.locator('#f-stype').selectOption('security');
    await page.locator('#f-q').fill('browser entry');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL(/stype=security/);
    const types = await page.locator('#logs tbody tr td:nth-child(3)').allInnerTexts();
    assert.equal(types.length, 36, 'every security entry of the 120 (i % 3 === 2: 6 of each 20)');
    assert.ok(types.every((t) => t === 'security'));
    await page.locator('#f-stype').selectOption('');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL(/q=browser/);
    const firstPage = await page.locator('#logs tbody tr td:first-child').allInnerTexts();
    await page.locator('#older').click();
    await page.waitForURL(/before=/);
    const secondPage = await page.locator('#logs tbody tr td:first-child').allInnerTexts();
    assert.equal(firstPage.length, 50);
    assert.ok(secondPage.length > 0);
    assert.equal(firstPage.filter((id) => secondPage.includes(id)).length, 0, 'pages do not overlap');
    await shot('05-logs-page-2');
  });

  test('when a permalink is followed, then the entry is shown on its own page', async () => {
    const link = page.locator('#logs tbody tr td:first-child a').first();
    const label = await link.innerText();
    await link.click();
    await page.waitForURL(/\/console\/logs\/\d+$/);
    assert.equal(await page.locator('h1').innerText(), `Entry ${label}`);
    assert.match(await page.locator('#entry').innerText(), /browser entry \d+/);
    await shot('06-entry');
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(stack.url('/console/logs'));
    await shot('07-logs-phone');
    await page.setViewportSize({ width: 1200, height: 800 });
  });

  test('when the person logs out, then the console refuses them', async () => {
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.waitForURL(/\/console\/login$/);
    await page.goto(stack.url('/console/logs'));
    assert.match(page.url(), /\/console\/login$/);
    const api = await page.request.get(stack.url('/api/logs'));
    assert.equal(api.status(), 401);
  });

  test('when a script hammers the login through nginx, then nginx and the app throttle it', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 14; i += 1) {
      const form = await fetch(stack.url('/console/login'));
      const csrf = (await form.text()).match(/name="_csrf" value="([^"]+)"/)![1]!;
      const cookie = form.headers.getSetCookie()[0]!.split(';')[0]!;
      const response = await fetch(stack.url('/console/login'), {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/x-www-form-urlencoded', cookie },
        body: new URLSearchParams({ _csrf: csrf, password: 'guess' }).toString(),
      });
      statuses.push(response.status);
    }
    assert.deepEqual(statuses.slice(0, 5), [401, 401, 401, 401, 401]);
    assert.ok(statuses.slice(5).every((s) => s === 429), `statuses: ${statuses.join(',')}`);
  });
});
