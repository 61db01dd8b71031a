/** Options shared by several commands are validated once, the same way for all of them. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { tempDir, writeTree } from './helpers/tmp.js';

const bin = new URL('../../bin/treecast', import.meta.url).pathname;

function tc(args: string[], store: string) {
  const r = spawnSync(process.execPath, [bin, ...args], { env: { ...process.env, TREECAST_STORE: store }, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('--jobs takes 1 to 256 in every command that has it; 0, 257 and non-numbers exit 2 before any work', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  writeTree(join(dir, 'src'), { a: 'a', 'd/b': 'b' });
  const digest = tc(['snapshot', join(dir, 'src')], store).out.trim();
  assert.equal(tc(['pack', join(dir, 'src'), join(dir, 'a.zip')], store).code, 0);
  const commands: Record<string, (n: string) => string[]> = {
    snapshot: (n) => ['snapshot', join(dir, 'src'), '--jobs', n],
    checkout: (n) => ['checkout', digest, join(dir, `co-${n}`), '--jobs', n],
    pack: (n) => ['pack', join(dir, 'src'), join(dir, `p-${n}.zip`), '--jobs', n],
    unpack: (n) => ['unpack', join(dir, 'a.zip'), join(dir, `un-${n}`), '--jobs', n],
    import: (n) => ['import', join(dir, 'a.zip'), '--jobs', n],
  };
  for (const [name, argv] of Object.entries(commands)) {
    for (const n of ['0', '257', '-1', '2.5', 'many']) {
      const r = tc(argv(n), store);
      assert.equal(r.code, 2, `${name} --jobs ${n}: ${r.err}`);
      assert.match(r.err, /--jobs must be a whole number from 1 to 256/, `${name} --jobs ${n}`);
      assert.equal(fs.existsSync(join(dir, `co-${n}`)) || fs.existsSync(join(dir, `p-${n}.zip`)) || fs.existsSync(join(dir, `un-${n}`)), false, 'nothing written');
    }
    for (const n of ['1', '256']) assert.equal(tc(argv(n), store).code, 0, `${name} --jobs ${n}`);
  }
  for (const name of Object.keys(commands)) {
    assert.match(tc([name, '--help'], store).out, /--jobs <n>\s+[^\n]*\(1-256, default: one per core\)/, `${name} --help`);
  }
});
