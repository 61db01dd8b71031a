/**
 * CreatedRecord (materialize/created.ts): the undo of a checkout into a new target removes what
 * the checkout made, also from a worker batch that failed for a reason whose error names none of
 * its paths, and never a user's file at a name the batch did not reach.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { LocalStore } from '../src/store/local.js';
import { WorkerPool } from '../src/fs/worker-pool.js';
import { CreatedRecord } from '../src/materialize/created.js';
import { type ApplyBatch, packWrites } from '../src/materialize/apply-op.js';
import { DigestMismatchError } from '../src/errors.js';
import { tempDir } from './helpers/tmp.js';

const FILES = 8;
/** The write the batch fails at: a corrupt blob in the store, read back with --verify. */
const BAD = 4;

/**
 * A store holding FILES blobs, blob BAD corrupted in place, and a batch writing them as f0..f7
 * (then a symlink): packed for a worker, or as the plan's list (a batch run where it was planned).
 */
function setUp(root: string, packed = true): { store: LocalStore; batch: ApplyBatch } {
  const store = LocalStore.open(join(tempDir('created-store'), 's'));
  const ops = [];
  for (let i = 0; i < FILES; i++) {
    const d = store.putSync(Buffer.from(`file ${i}\n`));
    ops.push({ rel: `f${i}`, hash: d.hash, size: d.size, executable: false });
    if (i === BAD) {
      const p = store.blobPath(d.hash);
      fs.chmodSync(p, 0o644);
      fs.writeFileSync(p, `FILE ${i}\n`);
    }
  }
  const batch: ApplyBatch = { root, method: 'copy', fileMode: 0o644, execMode: 0o755, verify: true, writes: packed ? packWrites([...ops, { rel: 'link', target: 'f0' }]) : [...ops, { rel: 'link', target: 'f0' }] };
  return { store, batch };
}

for (const [workers, packed] of [[0, true], [0, false], [1, true]] as const) {
  const how = workers ? 'in a worker' : packed ? 'inline, packed' : 'inline, as the plan lists it';
  test(`a batch that fails with an error naming no path of its own (${how}): undo removes what it made, keeps a user's file it never reached`, async () => {
    const dir = tempDir('created');
    const target = join(dir, 'new', 'out');
    fs.mkdirSync(target, { recursive: true });
    const { store, batch } = setUp(target, packed);
    // A user's file at a name the batch would have written after the one it failed at.
    fs.writeFileSync(join(target, `f${BAD + 2}`), 'mine\n');
    const record = new CreatedRecord(target, join(dir, 'new'));
    const pool = new WorkerPool(workers, { storeRoot: store.root });
    try {
      await assert.rejects(record.recording(pool).run('materialize.apply', batch), (e: unknown) => {
        // The failure names the store's blob, not a path of the batch.
        assert.ok(e instanceof DigestMismatchError, String(e));
        assert.equal(e.path, store.blobPath(e.digest!.split('/')[0]!));
        return true;
      });
    } finally {
      await pool.close();
    }
    assert.deepEqual(fs.readdirSync(target).sort(), ['f0', 'f1', 'f2', 'f3', `f${BAD + 2}`], 'the batch made the names before the bad blob');
    record.undo();
    // The user's file stays, so its directory and the parents do too; nothing of the checkout's.
    assert.deepEqual(fs.readdirSync(target), [`f${BAD + 2}`]);
    assert.equal(fs.readFileSync(join(target, `f${BAD + 2}`), 'utf8'), 'mine\n');
  });
}

test('a batch that succeeded, then one that failed naming no path: undo removes both and the target it made', async () => {
  const dir = tempDir('created');
  const target = join(dir, 'new', 'out');
  fs.mkdirSync(target, { recursive: true });
  const { store, batch } = setUp(target);
  const good: ApplyBatch = { ...batch, writes: packWrites([{ rel: 'ok', hash: store.putSync(Buffer.from('ok\n')).hash, size: 3, executable: false }]) };
  const record = new CreatedRecord(target, join(dir, 'new'));
  const pool = new WorkerPool(1, { storeRoot: store.root });
  try {
    await record.recording(pool).run('materialize.apply', good);
    await assert.rejects(record.recording(pool).run('materialize.apply', batch), DigestMismatchError);
  } finally {
    await pool.close();
  }
  assert.equal(fs.readdirSync(target).length, 1 + BAD);
  record.undo();
  assert.deepEqual(fs.readdirSync(dir), [], 'the target and the parent the checkout made are gone');
});
