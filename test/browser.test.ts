import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import http from 'node:http';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ADMIN_PASSWORD, authHeaders, Stack } from './support/stack.js';
import { waitFor } from './support/wait.js';

// A person with a browser, through nginx, against the stack PM2 runs. Screenshots of every page go
// to test-output/screenshots/. Each test opens a browser context of its own and logs in itself; the
// login throttle tests come from addresses of their own (127.0.0.2, 127.0.0.3), so no test's
// attempts count against another's.

const SHOTS = path.join(__dirname, '..', 'test-output', 'screenshots');
let stack: Stack;
let browser: Browser;

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
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

const shot = (page: Page, name: string) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

/** A fresh browser context (no cookies), logged in through the login form. */
async function loggedIn(): Promise<Page> {
  const page = await (await browser.newContext({ viewport: { width: 1200, height: 800 } })).newPage();
  await page.goto(stack.url('/console/login'));
  await page.getByLabel('Admin password').fill(ADMIN_PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.waitForURL(/\/console$/);
  return page;
}

/** One login attempt from `localAddress` (any 127.0.0.0/8 address reaches nginx), as a script makes it. */
async function loginFrom(localAddress: string, fields: { csrf?: string; password: string }): Promise<{ status: number; message: string; retryAfter: string | undefined }> {
  const form = await fetch(stack.url('/console/login'));
  const csrf = fields.csrf ?? (await form.text()).match(/name="_csrf" value="([^"]+)"/)![1]!;
  const cookie = form.headers.getSetCookie()[0]!.split(';')[0]!;
  const body = new URLSearchParams({ _csrf: csrf, password: fields.password }).toString();
  return new Promise((resolve, reject) => {
    const req = http.request(
      stack.url('/console/login'),
      { method: 'POST', localAddress, headers: { 'content-type': 'application/x-www-form-urlencoded', cookie, 'content-length': Buffer.byteLength(body) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const message = res.headers['content-type']?.includes('json') ? (JSON.parse(text) as { error: { message: string } }).error.message : text;
          resolve({ status: res.statusCode!, message, retryAfter: res.headers['retry-after'] });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** The instances table's pid column (host, instance, pid, …). */
const PID_CELLS = '#instances tbody tr td:nth-child(3)';

/** nginx's answer when its limit refuses (nginx/sitelog-site.conf), and the app's (src/console/routes.ts). */
const NGINX_LIMIT = 'too many login attempts, retry later';
const APP_LIMIT = /too many failed logins from this address/;

describe('the console in a browser', { timeout: 180_000 }, () => {
  test('when a person opens the console, then they must log in, and then see both instances', async () => {
    const page = await (await browser.newContext({ viewport: { width: 1200, height: 800 } })).newPage();
    await page.goto(stack.url('/console'));
    assert.match(page.url(), /\/console\/login$/);
    await shot(page, '01-login');
    await page.getByLabel('Admin password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.waitForURL(/\/console$/);
    assert.equal(await page.locator('#instances tbody tr').count(), 2);
    const shown = await page.locator(PID_CELLS).allInnerTexts();
    const pids = [...(await stack.web()).values()].map((p) => String(p.pid));
    assert.deepEqual(shown.map((t) => t.trim()).sort(), pids.sort(), 'each instance row shows its pid in its pid column');
    await shot(page, '02-instances');
    await page.context().close();
  });

  test('when a worker is killed, then the instances page shows its replacement and the starts page its restart', async () => {
    const page = await loggedIn();
    const victim = (await stack.web()).get(1)!;
    process.kill(victim.pid, 'SIGKILL');
    const replacement = await waitFor('instance 1 replaced', async () => {
      const p = (await stack.web()).get(1);
      return p && p.pid !== victim.pid ? p : undefined;
    });
    // the page refreshes itself from /api/instances every 2 s
    await page.waitForFunction(
      ([cells, pid]) => [...document.querySelectorAll(cells)].some((td) => td.textContent?.trim() === pid),
      [PID_CELLS, String(replacement.pid)] as const,
      { timeout: 15_000 },
    );
    const pids = (await page.locator(PID_CELLS).allInnerTexts()).map((t) => t.trim());
    assert.ok(!pids.includes(String(victim.pid)), 'the dead pid is gone');
    await page.getByRole('link', { name: 'Starts' }).click();
    await page.waitForURL(/\/console\/starts$/);
    const restarted = page.locator('li.event-restarted');
    assert.equal(await restarted.count(), 1);
    assert.match(await restarted.innerText(), new RegExp(`instance 1 restarted \\(pid ${replacement.pid}\\)`));
    assert.equal(await page.locator('section.start').count(), 1, 'still one start');
    await shot(page, '03-starts');
    await page.context().close();
  });

  test('when the Instances page stays open under traffic, then its live table refreshes within 2 s with each instance\'s figures and sparklines, and the host total', async () => {
    const page = await loggedIn();
    const traffic = setInterval(() => void fetch(stack.url('/healthz')).catch(() => undefined), 20);
    try {
      const first = await page.waitForFunction(() => Number(document.getElementById('live')?.dataset['refreshed'] ?? 0), undefined, { timeout: 10_000 });
      const firstAt = Number(await first.jsonValue());
      // two refreshes later, each within the promised 2 s (plus the request's own time)
      const later = await page.waitForFunction((after) => Number(document.getElementById('live')?.dataset['refreshed'] ?? 0) > after && Number(document.getElementById('live')?.dataset['refreshed']), firstAt, { timeout: 5_000 });
      assert.ok(Number(await later.jsonValue()) - firstAt <= 2_500, 'refreshed within 2 s');
      const rows = page.locator('#live tbody tr');
      assert.equal(await rows.count(), 2, 'one row per instance of this host');
      const pids = [...(await stack.web()).values()].map((p) => String(p.pid)).sort();
      assert.deepEqual((await page.locator('#live tbody tr td:nth-child(2)').allInnerTexts()).map((t) => t.trim()).sort(), pids);
      // each instance: CPU, RSS, req/s, p99, errors/min, loop lag, pool in use, each with its sparkline
      assert.equal(await page.locator('#live tbody tr:first-child svg.spark').count(), 7);
      await page.waitForFunction(() => [...document.querySelectorAll('#live tbody tr td:nth-child(5) .value')].some((v) => Number(v.textContent) > 0), undefined, { timeout: 10_000 });
      assert.match(await page.locator('#live tfoot th').first().innerText(), /Host total/);
      assert.match(await page.locator('#live tbody tr:first-child td:nth-child(4) .value').innerText(), /^\d+\.\d MB$/);
      await shot(page, '02b-instances-live');
    } finally {
      clearInterval(traffic);
      await page.context().close();
    }
  });

  test('when the Logs page opens, then its chart has a count axis and a time axis with readable labels', async () => {
    const page = await loggedIn();
    await page.goto(stack.url('/console/logs'));
    const labels = (await page.locator('svg.chart text.tick').allTextContents()).map((t) => t.trim());
    const counts = labels.filter((l) => /^\d+$/.test(l)).map(Number);
    const times = labels.filter((l) => /^\d\d:\d\d$/.test(l));
    assert.ok(counts.length >= 2 && counts[0] === 0, `count ticks from 0: ${labels.join(' ')}`);
    assert.ok(times.length >= 3, `time ticks (HH:MM, UTC): ${labels.join(' ')}`);
    const box = await page.locator('svg.chart').boundingBox();
    assert.ok(box && box.width >= 600 && box.height >= 120, 'a chart large enough to read');
    await shot(page, '04a-logs-chart');
    await page.context().close();
  });

  test('when logs are filtered and paged, then only matching entries come, page after page', async () => {
    const page = await loggedIn();
    await page.getByRole('link', { name: 'Logs' }).click();
    await page.waitForURL(/\/console\/logs$/);
    assert.equal(await page.locator('#logs tbody tr').count(), 50);
    assert.equal(await page.locator('svg.chart rect').count() > 0, true, 'the chart has bars');
    await shot(page, '04-logs');
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
    assert.equal(secondPage.length, 50, 'the 120 entries: 50, 50, then 20');
    assert.equal(firstPage.filter((id) => secondPage.includes(id)).length, 0, 'pages do not overlap');
    await shot(page, '05-logs-page-2');
    await page.context().close();
  });

  test('when a permalink is followed, then the entry is shown on its own page', async () => {
    const page = await loggedIn();
    await page.goto(stack.url('/console/logs?q=browser+entry'));
    const link = page.locator('#logs tbody tr td:first-child a').first();
    const label = await link.innerText();
    const description = await page.locator('#logs tbody tr td.description').first().innerText();
    await link.click();
    await page.waitForURL(/\/console\/logs\/\d+$/);
    assert.equal(await page.locator('h1').innerText(), `Entry ${label}`);
    assert.ok((await page.locator('#entry').innerText()).includes(description.trim()), 'the entry page shows the entry of the link');
    await shot(page, '06-entry');
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(stack.url('/console/logs'));
    await shot(page, '07-logs-phone');
    await page.context().close();
  });

  test('when the person logs out, then the console refuses them', async () => {
    const page = await loggedIn();
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.waitForURL(/\/console\/login$/);
    await page.goto(stack.url('/console/logs'));
    assert.match(page.url(), /\/console\/login$/);
    const api = await page.request.get(stack.url('/api/logs'));
    assert.equal(api.status(), 401);
    await page.context().close();
  });
});

describe('the login throttles, told apart', () => {
  test('when a script guesses passwords through nginx, then the app refuses the sixth guess (before nginx would)', async () => {
    const answers = [];
    for (let i = 0; i < 7; i += 1) answers.push(await loginFrom('127.0.0.2', { password: 'guess' }));
    assert.deepEqual(answers.map((a) => a.status), [401, 401, 401, 401, 401, 429, 429]);
    // 7 attempts stay within nginx's burst (11): these 429s are the app's, counted in the database
    for (const a of answers.slice(5)) assert.match(a.message, APP_LIMIT);
    const counted = await fetch(stack.url('/api/logs?stype=security&q=failed+console+login&limit=200'), { headers: authHeaders() });
    const entries = ((await counted.json()) as { items: Array<{ ip: string }> }).items.filter((e) => e.ip === '127.0.0.2');
    assert.equal(entries.length, 5, 'the five failures, recorded with the address nginx saw');
  });

  test('when a script floods the login with requests the app does not count, then nginx refuses them past its burst', async () => {
    // a wrong CSRF token: the app answers 403 and records no failure, so only nginx can answer 429
    const answers = [];
    for (let i = 0; i < 16; i += 1) answers.push(await loginFrom('127.0.0.3', { csrf: 'not-the-token', password: 'guess' }));
    const statuses = answers.map((a) => a.status);
    assert.deepEqual(statuses.slice(0, 10), Array(10).fill(403), `statuses: ${statuses.join(',')}`);
    assert.deepEqual(statuses.slice(-4), [429, 429, 429, 429], `statuses: ${statuses.join(',')}`);
    for (const a of answers.filter((x) => x.status === 429)) {
      assert.equal(a.message, NGINX_LIMIT);
      assert.equal(a.retryAfter, '60');
    }
  });
});
