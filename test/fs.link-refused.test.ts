/**
 * One list of errno codes makes a link or clone fall back to a copy (fs/link-refused.ts), and the
 * three places that link (checkout's import, a direct checkout's publish, tar unpack's hardlinks)
 * all use it. The filesystem's refusal is simulated by making link(2) fail with each code.
 */
import { afterEach, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import fsModule from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { digestOf } from '../src/core/digest.js';
import { LINK_REFUSED, linkRefused } from '../src/fs/link-refused.js';
import { fetchFile } from '../src/materialize/fetch-file.js';
import { importBlob } from '../src/materialize/import-file.js';
import { writeLinks } from '../src/archive/tar-write-op.js';
import { LocalStore } from '../src/store/local.js';
import { tempDir } from './helpers/tmp.js';

/** Codes that are real failures: falling back to a copy would hide them or replace a name. */
const NEVER = ['EEXIST', 'ENOENT', 'ENOTDIR', 'EACCES', 'ENOSPC', 'EDQUOT', 'EROFS', 'EIO', 'ELOOP', 'EISDIR'];

/** Makes every fs.linkSync fail with `code` until the test ends. */
function refuseLinks(code: string): void {
  mock.method(fsModule, 'linkSync', () => {
    throw Object.assign(new Error(`${code}: link refused`), { code, syscall: 'link' });
  });
  syncBuiltinESMExports();
}
afterEach(() => {
  mock.restoreAll();
  syncBuiltinESMExports();
});

test('the fallback set: filesystem refusals fall back, real failures never do', () => {
  for (const c of ['EXDEV', 'EPERM', 'EMLINK', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EINVAL']) assert.ok(linkRefused(Object.assign(new Error(c), { code: c })), c);
  for (const c of NEVER) assert.ok(!LINK_REFUSED.has(c), `${c} must never fall back to a copy`);
  assert.ok(!linkRefused(new Error('no code')));
  assert.ok(!linkRefused(undefined));
});

test('every refusal in the set makes all three linkers copy instead; a real failure is reported', async () => {
  const dir = tempDir('link-refused');
  const body = Buffer.from('the same bytes by every path\n');
  const d = digestOf(body);
  const store = LocalStore.open(join(dir, 'store'));
  await store.put(body);
  let n = 0;
  for (const code of [...LINK_REFUSED, 'EACCES', 'EEXIST']) {
    const copies = LINK_REFUSED.has(code);
    const at = join(dir, `t${n++}`);
    fs.mkdirSync(at);
    fs.writeFileSync(join(at, 'a'), body);
    refuseLinks(code);
    try {
      // checkout's import by hardlink
      if (copies) assert.equal(importBlob(store, d, join(at, 'imported'), 'hardlink', false, 0o644).used, 'copy', code);
      else assert.throws(() => importBlob(store, d, join(at, 'imported'), 'hardlink', false, 0o644), (e: NodeJS.ErrnoException) => e.code?.startsWith('ERR_TREECAST_') === true);
      // a direct checkout's verified file taking its name
      const fetched = fetchFile(join(at, 'fetched'), d, 0o644, async (_d, sink) => (sink(body), { source: 'test' }));
      if (copies) await fetched;
      else await assert.rejects(fetched, { code: 'ERR_TREECAST_FS' });
      // tar unpack's hardlink
      const links = { root: at, sameOwner: false, dirs: [], hardlinks: ['b'], linkTargets: ['a'], symlinks: [], symlinkTargets: [], symlinkMeta: new Float64Array() };
      if (copies) writeLinks(links);
      else assert.throws(() => writeLinks(links), { code: 'ERR_TREECAST_FS' });
    } finally {
      mock.restoreAll();
      syncBuiltinESMExports();
    }
    for (const name of ['imported', 'fetched', 'b']) {
      if (copies) assert.ok(fs.readFileSync(join(at, name)).equals(body), `${code}: ${name} copied`);
      else assert.ok(!fs.existsSync(join(at, name)), `${code}: ${name} not made`);
    }
    assert.deepEqual(fs.readdirSync(at).filter((x) => x.startsWith('.treecast-')), [], `${code}: no temporary left`);
  }
});
