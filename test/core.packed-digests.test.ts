import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { PackedDigests } from '../src/core/packed-digests.js';
import type { Digest } from '../src/core/digest.js';

function digest(bytes: Buffer, size: number): Digest {
  return { hash: bytes.toString('hex'), size };
}

test('packed digests behave as a set in insertion order, across growth from a small capacity', () => {
  const set = new PackedDigests(1);
  const reference = new Map<string, number>();
  const order: Digest[] = [];
  for (let i = 0; i < 20_000; i++) {
    // One in four repeats an earlier digest (with another size: the first one added stays).
    const d = i > 0 && i % 4 === 0 ? { ...order[(i * 7919) % order.length]!, size: 1 } : digest(randomBytes(32), i * 3 + 1);
    const added = set.add(d);
    assert.equal(added, !reference.has(d.hash), `add of ${d.hash}`);
    if (added) {
      reference.set(d.hash, order.length);
      order.push(d);
    }
  }
  assert.equal(set.length, order.length);
  order.forEach((d, i) => {
    assert.deepEqual(set.at(i), d);
    assert.equal(set.indexOf(d), i);
    assert.ok(set.has({ hash: d.hash, size: 0 }), 'lookups go by hash alone');
  });
  assert.deepEqual([...set], order);
  for (let i = 0; i < 1000; i++) assert.equal(set.has(digest(randomBytes(32), 1)), false);
});

test('digests crafted to share all but a few bytes do not pile up in one run of the table', () => {
  // A tree names whatever file digests its maker chose: these agree in their first 28 bytes (and
  // in any fixed choice of words a weak hash might read); a hash over only some of them would put
  // all 50,000 in one run, and each lookup would compare against all of them.
  const set = new PackedDigests();
  const prefix = createHash('sha256').update('crafted').digest();
  for (let i = 0; i < 50_000; i++) {
    const b = Buffer.from(prefix);
    b.writeUInt32BE(i, 28);
    assert.equal(set.add(digest(b, 1)), true);
  }
  assert.ok(set.longestRun() < 64, `longest run of occupied slots: ${set.longestRun()}`);
});

test('a hash that is not 64 hex digits is refused, not stored as a different one', () => {
  const set = new PackedDigests();
  assert.throws(() => set.add({ hash: 'ab'.repeat(31), size: 1 }), /not a SHA-256 hex digest/);
  assert.throws(() => set.add({ hash: 'zz'.repeat(32), size: 1 }), /not a SHA-256 hex digest/);
  assert.equal(set.length, 0);
});
