/**
 * Entries over 4 GiB (Zip64 sizes and offsets), through pack, unzip -t and unpack. Writes ~8 GiB,
 * so it runs only with TREECAST_TEST_LARGE=1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { pack } from '../src/archive/pack.js';
import { unpack } from '../src/archive/unpack.js';
import { scratchDir } from './helpers/zip-craft.js';

const enabled = process.env.TREECAST_TEST_LARGE === '1';
const SIZE = 2 ** 32 + 4096;

test('a file over 4 GiB packs (stored and deflated), passes unzip -t and unpacks', { skip: !enabled && 'set TREECAST_TEST_LARGE=1 to run' }, async () => {
  const dir = scratchDir();
  const src = join(dir, 'src');
  fs.mkdirSync(src);
  // Sparse: zeros with a marker at the very end, then a small file after it (offset past 4 GiB).
  const fd = fs.openSync(join(src, 'big'), 'w');
  fs.writeSync(fd, Buffer.from('tail-marker'), 0, 11, SIZE - 11);
  fs.closeSync(fd);
  fs.writeFileSync(join(src, 'z-after'), 'after the big one\n');
  for (const level of ['store', 'fast'] as const) {
    const zip = join(dir, `${level}.zip`);
    await pack({ dir: src }, zip, { level, jobs: 2 });
    const t = spawnSync('unzip', ['-t', zip], { encoding: 'utf8' });
    assert.equal(t.status, 0, t.stderr + t.stdout);
    const out = join(dir, `out-${level}`);
    await unpack(zip, out, { jobs: 2, maxRatio: 1e9 });
    assert.equal(fs.statSync(join(out, 'big')).size, SIZE);
    const tail = Buffer.alloc(11);
    const rfd = fs.openSync(join(out, 'big'), 'r');
    fs.readSync(rfd, tail, 0, 11, SIZE - 11);
    fs.closeSync(rfd);
    assert.equal(tail.toString(), 'tail-marker');
    assert.equal(fs.readFileSync(join(out, 'z-after'), 'utf8'), 'after the big one\n');
    fs.rmSync(out, { recursive: true });
    fs.rmSync(zip);
  }
});
