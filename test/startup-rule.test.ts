import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { startEvent, type StartFacts } from '../src/instances/startup-rule.js';

// The startup log's rule alone, case by case (the PM2 runs of test/startup-log.test.ts prove it end to end).

const facts = (over: Partial<StartFacts>): StartFacts => ({ alive: [], instance: 0, pm2Restarts: 0, cameUpInThisStart: false, ...over });

describe('startup rule', () => {
  const cases: Array<[string, Partial<StartFacts>, ReturnType<typeof startEvent>]> = [
    ['the first instance of a host comes up', {}, { serverStarted: true, event: 'started' }],
    ['a restarted instance comes back as the host\'s only one (a start by definition)', { pm2Restarts: 3, cameUpInThisStart: true }, { serverStarted: true, event: 'started' }],
    ['a second instance comes up beside the first', { alive: [0], instance: 1 }, { serverStarted: false, event: 'started' }],
    ['pm2 reload replaces an instance whose old process still runs', { alive: [0, 1], instance: 1, pm2Restarts: 1, cameUpInThisStart: true }, { serverStarted: false, event: 'reloaded' }],
    ['a killed instance is restarted by PM2 while others live', { alive: [0], instance: 1, pm2Restarts: 1, cameUpInThisStart: true }, { serverStarted: false, event: 'restarted' }],
    ['a scale-up adds an id new to this start', { alive: [0, 1], instance: 2 }, { serverStarted: false, event: 'started' }],
    ['an id PM2 restarted before this start began comes up', { alive: [0], instance: 1, pm2Restarts: 2, cameUpInThisStart: false }, { serverStarted: false, event: 'started' }],
  ];
  for (const [when, over, expected] of cases) {
    test(`when ${when}, then ${expected.serverStarted ? '"server started" and ' : ''}"${expected.event}"`, () => {
      assert.deepEqual(startEvent(facts(over)), expected);
    });
  }
});
