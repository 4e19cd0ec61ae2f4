import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Slots } from '../src/db/slots.js';

// The write slots' rule (src/db/slots.ts): a bounded number of holders, waiters served in order,
// each waiter giving up at its bound.

const timedOut = () => new Error('no slot in time');

describe('slots', () => {
  test('when slots are free, then take resolves at once; when all are held, then the next waits', async () => {
    const slots = new Slots(2, 1_000, timedOut);
    await slots.take();
    await slots.take();
    let third = false;
    const waiting = slots.take().then(() => (third = true));
    await Promise.resolve();
    assert.equal(third, false);
    assert.equal(slots.waiting, 1);
    slots.give();
    await waiting;
    assert.equal(slots.waiting, 0);
  });

  test('when several wait, then a slot given back goes to the one that waited longest', async () => {
    const slots = new Slots(1, 1_000, timedOut);
    await slots.take();
    const order: string[] = [];
    const first = slots.take().then(() => order.push('first'));
    const second = slots.take().then(() => order.push('second'));
    slots.give();
    await first;
    slots.give();
    await second;
    assert.deepEqual(order, ['first', 'second']);
  });

  test('when no slot frees within the bound, then take fails with the error given, and leaves the queue', async () => {
    const slots = new Slots(1, 20, timedOut);
    await slots.take();
    await assert.rejects(slots.take(), /no slot in time/);
    assert.equal(slots.waiting, 0);
    slots.give();
    await slots.take();
  });

  test('when a slot is given back with nobody waiting, then it is free for the next taker', async () => {
    const slots = new Slots(1, 20, timedOut);
    await slots.take();
    slots.give();
    await slots.take();
    await assert.rejects(slots.take(), /no slot in time/, 'still one holder at most');
  });
});

test('when the pool is sized, then writes get three quarters of it, at least one, and never the whole of a pool of two or more', async () => {
  const { writeSlotCount } = await import('../src/db/lean.js');
  assert.deepEqual([1, 2, 3, 4, 10, 20].map(writeSlotCount), [1, 1, 2, 3, 7, 15]);
});
