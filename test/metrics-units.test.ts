import assert from 'node:assert/strict';
import { test } from 'node:test';
import { envFields } from '../src/config.js';
import { niceStep, timeTicks } from '../src/console/pages.js';
import type { Sample } from '../src/metrics/instruments.js';
import { hostTotal } from '../src/metrics/live.js';
import { metricsAllowList } from '../src/metrics/routes.js';
import { metricsAllowLines } from '../src/ops/nginx.js';

// The pure parts of the instruments: the live console's host total, the chart's axes, METRICS_ALLOW.

const sample = (t: number, over: Partial<Sample> = {}): Sample => ({
  t,
  cpu: 0.1,
  rss: 100,
  rps: 10,
  p99: 5,
  errors: 0,
  errorsPerMin: 1,
  loopLag: 2,
  poolInUse: 1,
  ...over,
});

test('when instances have samples of different lengths, then the host total matches them newest with newest, summing what adds up and taking the worst of p99 and lag', () => {
  const total = hostTotal([
    { instance: 0, pid: 10, samples: [sample(1_000), sample(3_000, { p99: 9, loopLag: 1 })] },
    { instance: 1, pid: 11, samples: [sample(3_100, { p99: null, loopLag: 7, rps: 5 })] },
  ]);
  assert.equal(total.length, 2);
  assert.deepEqual(total[0], sample(1_000));
  assert.deepEqual(total[1], { t: 3_100, cpu: 0.2, rss: 200, rps: 15, p99: 9, errors: 0, errorsPerMin: 2, loopLag: 7, poolInUse: 2 });
  assert.deepEqual(hostTotal([]), []);
});

test('when the chart picks its count axis, then the step is 1, 2 or 5 times a power of ten', () => {
  assert.deepEqual([0, 3, 7, 124, 999, 25_000].map((max) => niceStep(max, 4)), [1, 1, 2, 50, 500, 10_000]);
});

test('when the chart picks its time axis, then about six ticks fall on round UTC times', () => {
  const from = Date.UTC(2026, 10, 29, 3, 7, 53);
  const hour = timeTicks(from, from + 3_600_000);
  assert.deepEqual(hour.map((t) => t.label), ['03:10', '03:20', '03:30', '03:40', '03:50', '04:00']);
  const week = timeTicks(from, from + 7 * 86_400_000);
  assert.ok(week.length >= 3 && week.length <= 7 && week.every((t) => /^\d\d-\d\d$/.test(t.label)), week.map((t) => t.label).join(' '));
});

test('when METRICS_ALLOW lists addresses and networks, then exactly those may scrape, IPv4-mapped or not', () => {
  const allowed = metricsAllowList(['127.0.0.1', '10.1.0.0/16', '2001:db8::/64']);
  assert.deepEqual(
    ['127.0.0.1', '::ffff:127.0.0.1', '10.1.200.3', '2001:db8::5', '127.0.0.2', '10.2.0.1', '2001:db8:1::5', '::1', undefined].map(allowed),
    [true, true, true, true, false, false, false, false, false],
  );
  const loopback = metricsAllowList(envFields.METRICS_ALLOW.parse('loopback'));
  assert.deepEqual(['127.0.0.9', '::1', '10.0.0.1'].map(loopback), [true, true, false]);
  assert.equal(metricsAllowLines(envFields.METRICS_ALLOW.parse('loopback,10.1.0.0/16')), '    allow 127.0.0.0/8;\n    allow ::1;\n    allow 10.1.0.0/16;');
});
