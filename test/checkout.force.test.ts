/**
 * What --force, --clean and `status` do to a user's directory, through the CLI: force replaces
 * what conflicts with the tree and restores what the user changed, untracked entries are kept
 * unless --clean, and every report says exactly what happened (names that are not UTF-8 included).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { LocalStore } from '../src/store/local.js';
import { directoryBlob } from '../src/core/reapi.js';
import { formatDigest } from '../src/core/digest.js';
import { describeTree, settle, tempDir, writeTree } from './helpers/tmp.js';

const bin = new URL('../../bin/treecast', import.meta.url).pathname;

function tc(args: string[], store: string) {
  const r = spawnSync(process.execPath, [bin, ...args], { env: { ...process.env, TREECAST_STORE: store }, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function setup() {
  const dir = tempDir();
  const store = join(dir, 's');
  writeTree(join(dir, 'src'), { 'a': 'tree a\n', 'keep': 'tree keep\n', 'd/x': 'tree x\n', 'd/gone-later': 'g\n', 'l': { link: 'a' } });
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 't'], store).code, 0);
  return { dir, store, out: join(dir, 'out'), src: join(dir, 'src') };
}

test('--force without a checkout record replaces conflicting files and keeps the rest; only --clean removes them, listing each', () => {
  const { dir, store, out, src } = setup();
  writeTree(out, { 'a': 'user version\n', 'mine.txt': 'my notes\n', 'build/out.o': 'object' });
  const forced = tc(['checkout', 't', out, '--force', '--json'], store);
  assert.equal(forced.code, 0, forced.err);
  assert.deepEqual(JSON.parse(forced.out).cleaned, []);
  assert.equal(fs.readFileSync(join(out, 'a'), 'utf8'), 'tree a\n', 'the conflicting file is replaced');
  assert.equal(fs.readFileSync(join(out, 'mine.txt'), 'utf8'), 'my notes\n', 'a file the tree does not have is kept');
  assert.equal(fs.readFileSync(join(out, 'build', 'out.o'), 'utf8'), 'object');
  // With a record now, the same holds.
  fs.writeFileSync(join(out, 'later.txt'), 'more');
  assert.equal(tc(['checkout', 't', out, '--force'], store).code, 0);
  assert.ok(fs.existsSync(join(out, 'later.txt')));
  const cleaned = tc(['checkout', 't', out, '--clean'], store);
  assert.equal(cleaned.code, 0, cleaned.err);
  assert.match(cleaned.err, /3 untracked removed/);
  for (const p of ['mine.txt', 'later.txt', 'build/']) assert.ok(cleaned.err.includes(`removed untracked: ${p}\n`), cleaned.err);
  assert.deepEqual(describeTree(out), describeTree(src));
  const json = tc(['checkout', 't', out, '--clean', '--json'], store);
  assert.deepEqual(JSON.parse(json.out).cleaned, []);
  void dir;
});

test('status lists modified, added and removed entries; checkout --force of the same tree puts back exactly the tree and keeps untracked files', async () => {
  const { store, out, src } = setup();
  assert.equal(tc(['checkout', 't', out], store).code, 0);
  assert.deepEqual(tc(['status', out], store), { code: 0, out: '', err: '' });
  await settle();
  fs.writeFileSync(join(out, 'keep'), 'user edit\n');
  fs.rmSync(join(out, 'd', 'gone-later'));
  fs.rmSync(join(out, 'l'));
  fs.symlinkSync('elsewhere', join(out, 'l'));
  fs.writeFileSync(join(out, 'new.txt'), 'mine');
  fs.mkdirSync(join(out, 'newdir'));
  fs.writeFileSync(join(out, 'newdir', 'f'), 'mine');
  const st = tc(['status', out], store);
  assert.equal(st.code, 0, st.err);
  assert.equal(st.out, 'D d/gone-later\nM keep\nM l\nA new.txt\nA newdir/\n');
  const js = JSON.parse(tc(['status', out, '--json'], store).out);
  assert.deepEqual({ m: js.modified, a: js.added, r: js.removed }, { m: ['keep', 'l'], a: ['new.txt', 'newdir/'], r: ['d/gone-later'] });
  // Without --force, git keeps local changes where the tree does not change.
  assert.equal(tc(['checkout', 't', out], store).code, 0);
  assert.equal(fs.readFileSync(join(out, 'keep'), 'utf8'), 'user edit\n');
  assert.equal(tc(['status', out], store).out, st.out, 'a checkout that changed nothing does not make edits look unchanged');
  const forced = tc(['checkout', 't', out, '--force'], store);
  assert.equal(forced.code, 0, forced.err);
  assert.equal(fs.readFileSync(join(out, 'keep'), 'utf8'), 'tree keep\n');
  assert.equal(fs.readlinkSync(join(out, 'l')), 'a');
  assert.equal(fs.readFileSync(join(out, 'd', 'gone-later'), 'utf8'), 'g\n');
  assert.equal(tc(['status', out], store).out, 'A new.txt\nA newdir/\n');
  fs.rmSync(join(out, 'new.txt'));
  fs.rmSync(join(out, 'newdir'), { recursive: true });
  assert.deepEqual(describeTree(out), describeTree(src));
  const none = tc(['status', join(out, 'd')], store);
  assert.equal(none.code, 7);
  assert.match(none.err, /no checkout into .* is recorded/);
});

test('untracked names that are not UTF-8 are kept by --force, shown escaped by status, and really removed by --clean', () => {
  const { store, out } = setup();
  const rawName = Buffer.from([0x66, 0xff, 0x6f]); // "f", an invalid byte, "o"
  const rawPath = (base: string) => Buffer.concat([Buffer.from(`${base}/`), rawName]);
  const present = () => (fs.readdirSync(out, { encoding: 'buffer' }) as Buffer[]).some((n) => n.equals(rawName));
  fs.mkdirSync(out);
  fs.writeFileSync(rawPath(out), 'bytes name');
  fs.mkdirSync(join(out, 'd'));
  fs.writeFileSync(rawPath(join(out, 'd')), 'nested');
  const forced = tc(['checkout', 't', out, '--force', '--json'], store);
  assert.equal(forced.code, 0, forced.err);
  assert.deepEqual(JSON.parse(forced.out).cleaned, []);
  assert.equal(JSON.parse(forced.out).removed, 0, 'nothing is claimed removed');
  assert.ok(present(), 'the file is still there');
  const st = tc(['status', out], store);
  assert.equal(st.out, 'A d/f\\xffo\nA f\\xffo\n');
  assert.ok(!st.out.includes('\ufffd'));
  const cleaned = tc(['checkout', 't', out, '--clean'], store);
  assert.equal(cleaned.code, 0, cleaned.err);
  assert.ok(cleaned.err.includes('removed untracked: f\\xffo\n') && cleaned.err.includes('removed untracked: d/f\\xffo\n'), cleaned.err);
  assert.ok(!cleaned.err.includes('\ufffd'));
  assert.ok(!present(), 'the file is really gone');
  assert.equal(fs.readdirSync(join(out, 'd')).length, 2);
});

test('a tree whose file entry has the right hash but a wrong size is refused with exit 5, the file not written', () => {
  const dir = tempDir();
  const store = LocalStore.open(join(dir, 's'));
  const blob = store.putSync(Buffer.from('twelve bytes'));
  for (const size of [blob.size + 100, blob.size - 1, 0]) {
    const top = directoryBlob({ files: [{ name: 'f', digest: { hash: blob.hash, size }, executable: false }], directories: [], symlinks: [] });
    store.putSync(top.bytes);
    for (const method of ['copy', 'hardlink']) {
      const out = join(dir, `out-${size}-${method}`);
      const r = tc(['checkout', formatDigest(top.digest), out, '--method', method], store.root);
      assert.equal(r.code, 5, `size ${size}, ${method}: ${r.err}`);
      assert.match(r.err, /ERR_TREECAST_DIGEST_MISMATCH/);
      assert.ok(r.err.includes(join(out, 'f')), r.err);
      assert.equal(fs.existsSync(join(out, 'f')), false);
    }
  }
});

test('an edit survives a checkout that changes nothing: the next update that changes the file stops on it', async () => {
  const { dir, store, out } = setup();
  writeTree(join(dir, 'v2'), { 'a': 'tree a\n', 'keep': 'v2 keep\n', 'd/x': 'tree x\n', 'd/gone-later': 'g\n', 'l': { link: 'a' } });
  assert.equal(tc(['snapshot', join(dir, 'v2'), '--ref', 'v2'], store).code, 0);
  assert.equal(tc(['checkout', 't', out], store).code, 0);
  await settle();
  fs.writeFileSync(join(out, 'keep'), 'user edit\n');
  await settle();
  assert.equal(tc(['checkout', 't', out], store).code, 0);
  await settle();
  const r = tc(['checkout', 'v2', out], store);
  assert.equal(r.code, 4, r.err);
  assert.match(r.err, /keep/);
  assert.equal(fs.readFileSync(join(out, 'keep'), 'utf8'), 'user edit\n');
});

test('--clean and --force never reach outside DIR: an untracked link to a directory elsewhere goes, what it points to stays', () => {
  const { dir, store, out, src } = setup();
  writeTree(join(dir, 'elsewhere'), { 'precious': 'the user owns this\n', 'sub/deep': 'and this\n' });
  const elsewhere = describeTree(join(dir, 'elsewhere'));
  assert.equal(tc(['checkout', 't', out], store).code, 0);
  // Untracked: a link to the outside directory, and a directory holding another such link.
  fs.symlinkSync(join(dir, 'elsewhere'), join(out, 'to-elsewhere'));
  fs.mkdirSync(join(out, 'junk'));
  fs.symlinkSync(join(dir, 'elsewhere', 'sub'), join(out, 'junk', 'inner'));
  // Tracked: `d` replaced by a link to the outside directory (a conflict --force resolves).
  fs.rmSync(join(out, 'd'), { recursive: true });
  fs.symlinkSync(join(dir, 'elsewhere'), join(out, 'd'));
  const forced = tc(['checkout', 't', out, '--force'], store);
  assert.equal(forced.code, 0, forced.err);
  assert.deepEqual(describeTree(join(dir, 'elsewhere')), elsewhere, '--force did not write into or through the link');
  assert.ok(fs.lstatSync(join(out, 'd')).isDirectory(), 'the link was replaced by the tree directory');
  assert.ok(fs.lstatSync(join(out, 'to-elsewhere')).isSymbolicLink(), 'untracked is kept without --clean');
  const cleaned = tc(['checkout', 't', out, '--clean'], store);
  assert.equal(cleaned.code, 0, cleaned.err);
  assert.deepEqual(describeTree(out), describeTree(src));
  assert.deepEqual(describeTree(join(dir, 'elsewhere')), elsewhere, '--clean removed the links, not what they point to');
});

test('--force keeps untracked files inside a directory where the tree has a file: it stops naming them, and --clean removes them', () => {
  const { dir, store, out } = setup();
  // The tree drops d/ and has a file d (an update from a known checkout).
  writeTree(join(dir, 'v2'), { 'a': 'tree a\n', 'keep': 'tree keep\n', 'd': 'now a file\n', 'l': { link: 'a' } });
  assert.equal(tc(['snapshot', join(dir, 'v2'), '--ref', 'v2'], store).code, 0);
  assert.equal(tc(['checkout', 't', out], store).code, 0);
  fs.writeFileSync(join(out, 'd', 'mine'), 'precious\n');
  const stopped = tc(['checkout', 'v2', out], store);
  assert.equal(stopped.code, 4, stopped.err);
  const forced = tc(['checkout', 'v2', out, '--force'], store);
  assert.equal(forced.code, 4, forced.err);
  assert.ok(forced.err.includes('untracked') && forced.err.includes('  d/mine\n'), forced.err);
  assert.match(forced.err, /--clean/);
  assert.equal(fs.readFileSync(join(out, 'd', 'mine'), 'utf8'), 'precious\n');
  assert.equal(fs.readFileSync(join(out, 'd', 'x'), 'utf8'), 'tree x\n', 'nothing was touched');
  const json = JSON.parse(tc(['checkout', 'v2', out, '--force', '--json'], store).out);
  assert.deepEqual({ ok: json.ok, code: json.error.code, paths: json.error.paths }, { ok: false, code: 'ERR_TREECAST_LOCAL_CHANGES', paths: ['d/mine'] });
  // A directory of only what the last checkout wrote (edits included) is still replaced by --force.
  fs.renameSync(join(out, 'd', 'mine'), join(dir, 'mine'));
  fs.writeFileSync(join(out, 'd', 'x'), 'user edit\n');
  const replaced = tc(['checkout', 'v2', out, '--force'], store);
  assert.equal(replaced.code, 0, replaced.err);
  assert.equal(fs.readFileSync(join(out, 'd'), 'utf8'), 'now a file\n');

  // No record (a new store): a user's folder where the tree has a file.
  const other = join(dir, 'other');
  fs.mkdirSync(join(other, 'keep'), { recursive: true });
  fs.writeFileSync(join(other, 'keep', 'p'), 'precious\n');
  const fresh = join(dir, 's2');
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 't'], fresh).code, 0);
  const f2 = tc(['checkout', 't', other, '--force'], fresh);
  assert.equal(f2.code, 4, f2.err);
  assert.ok(f2.err.includes('  keep/p\n'), f2.err);
  assert.equal(fs.readFileSync(join(other, 'keep', 'p'), 'utf8'), 'precious\n');
  // The same tree again (force checks every entry): the user's folder where the tree has a file.
  const again = join(dir, 'again');
  assert.equal(tc(['checkout', 't', again], store).code, 0);
  fs.rmSync(join(again, 'a'));
  fs.mkdirSync(join(again, 'a'));
  fs.writeFileSync(join(again, 'a', 'p'), 'precious\n');
  const f3 = tc(['checkout', 't', again, '--force'], store);
  assert.equal(f3.code, 4, f3.err);
  assert.ok(f3.err.includes('  a/p\n'), f3.err);
  assert.equal(fs.readFileSync(join(again, 'a', 'p'), 'utf8'), 'precious\n');
  // --clean is the way to say they may go.
  const cleaned = tc(['checkout', 't', again, '--force', '--clean'], store);
  assert.equal(cleaned.code, 0, cleaned.err);
  assert.equal(fs.readFileSync(join(again, 'a'), 'utf8'), 'tree a\n');
});
