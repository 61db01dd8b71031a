import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { StatBatches, snapshot } from '../src/capture/snapshot.js';
import { STAT_TAKEN, STAT_UNCLAIMED, statBatch } from '../src/capture/ingest-op.js';
import { WorkerPool } from '../src/fs/worker-pool.js';
import { STAT_FIELDS, STAT_INO, STAT_MTIME, STAT_SIZE, fillRun, placeStats, statPaths, statRequest, walk } from '../src/capture/walk.js';
import { LocalStore } from '../src/store/local.js';
import { TreeReader } from '../src/store/tree-reader.js';
import { formatDigest } from '../src/core/digest.js';
import { CaptureError, SpecialFileError, SymlinkLoopError, TargetError } from '../src/errors.js';
import { settle, tempDir, writeTree } from './helpers/tmp.js';
import { publicBin } from './helpers/public-package.js';

async function entries(store: LocalStore, root: Parameters<TreeReader['walk']>[0]): Promise<string[]> {
  const out: string[] = [];
  for await (const e of new TreeReader(store).walk(root)) out.push(`${e.type} ${e.path}${e.type === 'symlink' ? ` -> ${e.target}` : ''}`);
  return out;
}

test('an unchanged tree is snapshotted again from the stat cache without reading file contents', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'a.txt': 'alpha', 'b/c.txt': 'gamma', 'b/d.bin': 'delta'.repeat(1000) });
  await settle();
  const store = LocalStore.open(join(dir, 's'));
  const first = await snapshot(join(dir, 'src'), { store });
  assert.equal(first.hashedFiles, 3);
  const second = await snapshot(join(dir, 'src'), { store });
  assert.equal(second.hashedFiles, 0);
  assert.equal(formatDigest(second.digest), formatDigest(first.digest));
  // A changed file is re-hashed, and only it.
  fs.writeFileSync(join(dir, 'src', 'b', 'c.txt'), 'GAMMA');
  const third = await snapshot(join(dir, 'src'), { store });
  assert.equal(third.hashedFiles, 1);
  assert.notEqual(formatDigest(third.digest), formatDigest(first.digest));
});

test('a file changed in the same instant as its cached stat is re-hashed (racy entries are not trusted)', async () => {
  const dir = tempDir();
  const store = LocalStore.open(join(dir, 's'));
  writeTree(join(dir, 'src'), { 'f.txt': 'one', 'settled.txt': 'two' });
  await settle();
  // Times set explicitly, not left to the clock: an mtime at or after the snapshot's start is what
  // a change in the same tick as the recorded stat looks like, so that entry must not be trusted.
  const future = new Date(Date.now() + 3600_000);
  fs.utimesSync(join(dir, 'src', 'f.txt'), future, future);
  const first = await snapshot(join(dir, 'src'), { store });
  assert.equal(first.hashedFiles, 2);
  const again = await snapshot(join(dir, 'src'), { store });
  assert.equal(again.hashedFiles, 1, 'the racy file is hashed again, the settled one is not');
});

test('symlinks are stored verbatim and never followed by default', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'real/file': 'x', 'abs': { link: '/etc/passwd' }, 'rel': { link: 'real/file' }, 'dangling': { link: 'nowhere' } });
  const store = LocalStore.open(join(dir, 's'));
  const r = await snapshot(join(dir, 'src'), { store });
  assert.deepEqual(await entries(store, r.digest), ['symlink abs -> /etc/passwd', 'symlink dangling -> nowhere', 'symlink rel -> real/file', 'dir real', 'file real/file']);
});

test('--follow-symlinks captures what links point to, and a loop is a clear error', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'real/file': 'x', 'to-file': { link: 'real/file' }, 'to-dir': { link: 'real' } });
  const store = LocalStore.open(join(dir, 's'));
  const r = await snapshot(join(dir, 'src'), { store, followSymlinks: true });
  assert.deepEqual(await entries(store, r.digest), ['file to-file', 'dir real', 'file real/file', 'dir to-dir', 'file to-dir/file']);
  fs.symlinkSync('..', join(dir, 'src', 'real', 'up'));
  await assert.rejects(snapshot(join(dir, 'src'), { store, followSymlinks: true }), (e: unknown) => e instanceof SymlinkLoopError && e.message.includes('up'));
});

test('FIFOs are skipped with a warning naming them; --strict makes that an error', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'a': 'a' });
  execFileSync('mkfifo', [join(dir, 'src', 'pipe')]);
  const store = LocalStore.open(join(dir, 's'));
  const seen: string[] = [];
  const r = await snapshot(join(dir, 'src'), { store, onSkip: (s) => seen.push(`${s.kind} ${s.path}`) });
  assert.deepEqual(seen, [`fifo ${join(dir, 'src', 'pipe')}`]);
  assert.equal(r.files, 1);
  await assert.rejects(snapshot(join(dir, 'src'), { store, strict: true }), SpecialFileError);
});

test('--exclude leaves out names at any depth, or paths from the root', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'keep.c': '1', 'x.o': '2', 'sub/y.o': '3', 'sub/keep.h': '4', 'build/out': '5', 'sub/build/in': '6' });
  const store = LocalStore.open(join(dir, 's'));
  const r = await snapshot(join(dir, 'src'), { store, exclude: ['*.o', '/build'] });
  assert.deepEqual(await entries(store, r.digest), ['file keep.c', 'dir sub', 'file sub/keep.h', 'dir sub/build', 'file sub/build/in']);
});

test('a name that is not valid UTF-8 is an error naming the path, and nothing is recorded', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'ok': 'ok' });
  fs.writeFileSync(Buffer.concat([Buffer.from(join(dir, 'src') + '/'), Buffer.from([0x62, 0xff, 0x61])]), 'bad name');
  const store = LocalStore.open(join(dir, 's'));
  await assert.rejects(snapshot(join(dir, 'src'), { store, ref: 'never' }), (e: unknown) => e instanceof CaptureError && e.message.includes(join(dir, 'src')));
  assert.equal(store.readRef('never'), undefined);
});

test('a name that is not valid UTF-8 can be left out with --exclude, as the error advises (a glob, or the name as the shell passes it)', () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'ok': 'ok', 'd/keep': 'k' });
  const bad = Buffer.from([0x62, 0xff, 0x61]);
  fs.writeFileSync(Buffer.concat([Buffer.from(join(dir, 'src') + '/'), bad]), 'bad name');
  fs.mkdirSync(Buffer.concat([Buffer.from(join(dir, 'src', 'd') + '/'), bad]));
  const bin = publicBin();
  const run = (...args: string[]) => spawnSync(process.execPath, [bin, 'snapshot', join(dir, 'src'), '--store', join(dir, 's'), ...args], { encoding: 'utf8' });
  const refused = run();
  assert.equal(refused.status, 7, refused.stderr);
  assert.match(refused.stderr, /--exclude/);
  const byGlob = run('--exclude', 'b*a');
  assert.equal(byGlob.status, 0, byGlob.stderr);
  // Node hands the program a name that is not UTF-8 with U+FFFD in place of the bad byte, as it reads the entry.
  const byName = run('--exclude', 'b\ufffda');
  assert.equal(byName.status, 0, byName.stderr);
  assert.equal(byName.stdout.trim().split('\n').pop(), byGlob.stdout.trim().split('\n').pop());
  const ls = spawnSync(process.execPath, [bin, 'ls', byGlob.stdout.trim().split('\n').pop()!, '--store', join(dir, 's')], { encoding: 'utf8' });
  assert.deepEqual(ls.stdout.trim().split('\n').map((l) => l.split('\t').pop()), ['ok', 'd/', 'd/keep']);
});

test('snapshot of a missing directory or of a file is a TargetError', async () => {
  const dir = tempDir();
  fs.writeFileSync(join(dir, 'file'), 'x');
  const store = LocalStore.open(join(dir, 's'));
  await assert.rejects(snapshot(join(dir, 'absent'), { store }), TargetError);
  await assert.rejects(snapshot(join(dir, 'file'), { store }), TargetError);
});

test('hashing in worker threads gives the same digest as hashing inline', async () => {
  const dir = tempDir();
  const spec: Record<string, string> = {};
  for (let i = 0; i < 700; i++) spec[`d${i % 13}/f${i}`] = `content ${i}`.repeat(1 + (i % 40));
  writeTree(join(dir, 'src'), spec);
  const a = await snapshot(join(dir, 'src'), { store: LocalStore.open(join(dir, 's1')), jobs: 2 });
  const b = await snapshot(join(dir, 'src'), { store: LocalStore.open(join(dir, 's2')), jobs: 1 });
  assert.equal(a.hashedFiles, 700);
  assert.equal(formatDigest(a.digest), formatDigest(b.digest));
});

test('an unreadable file is an error naming the path, and nothing is recorded', { skip: process.getuid?.() !== 0 && 'needs root to run the snapshot as another user' }, () => {
  const dir = tempDir();
  fs.chmodSync(dir, 0o755);
  writeTree(join(dir, 'src'), { 'ok': 'ok', 'secret': 'no' });
  fs.chmodSync(join(dir, 'src', 'secret'), 0o000);
  fs.mkdirSync(join(dir, 's'));
  fs.chownSync(join(dir, 's'), 65534, 65534);
  // A world-readable copy of the package: the clone itself may sit in a directory mode 700.
  const r = spawnSync(process.execPath, [publicBin(), 'snapshot', join(dir, 'src'), '--store', join(dir, 's'), '--ref', 'never'], { uid: 65534, gid: 65534, encoding: 'utf8' });
  assert.equal(r.status, 7, r.stderr);
  assert.match(r.stderr, /ERR_TREECAST_CAPTURE/);
  assert.ok(r.stderr.includes(join(dir, 'src', 'secret')));
  assert.equal(fs.existsSync(join(dir, 's', 'refs', 'never')), false);
});

test('files are statted from runs of names per directory, a batch starting and ending mid-directory', () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'a/1': '1', 'a/2': '22', 'a/3': '333', 'b/4': '4444', 'b/8': '8', 'b/c/5': '55555', 'b/c/6': '666666', 'd/7': '7777777', 'd/9': '9' });
  const { files, runs } = walk(join(dir, 'src'));
  assert.equal(files.length, 9);
  assert.equal(runs.length, 4);
  // All names but the first and the last: a batch starting and ending mid-directory.
  const cursor = { run: 0, pos: 1 };
  const { req, pieces } = statRequest(runs, cursor, 7);
  assert.equal(req.names.length, 7);
  assert.equal(req.dirs.length, 4);
  assert.deepEqual(cursor, { run: 3, pos: runs[3]!.names.length - 1 }, 'the batch ends mid-directory');
  placeStats(pieces, statPaths(req, false));
  const batch = pieces.flatMap((p) => p.run.files!.slice(p.start, p.end));
  for (const p of pieces) fillRun(p.run);
  for (const f of batch) {
    const st = fs.lstatSync(f.abs);
    assert.deepEqual([f.stats[f.at + STAT_INO], f.size, f.stats[f.at + STAT_MTIME]], [st.ino, st.size, st.mtimeMs], f.abs);
  }
});

test('stat batches posted to a worker are taken back by the calling thread from the last one: each file is statted exactly once', async () => {
  const dir = tempDir();
  const spec: Record<string, string> = {};
  // 3,500 files in 7 directories: 4 batches of up to 1,024 names, some starting mid-directory.
  for (let i = 0; i < 3500; i++) spec[`d${i % 7}/f${i}`] = 'x'.repeat(i % 13);
  writeTree(join(dir, 'src'), spec);
  const { runs } = walk(join(dir, 'src'));
  // A worker still starting (it loads the stat op on first use) when the last batch is posted: the
  // calling thread claims that one at least.
  const pool = new WorkerPool(1, { storeRoot: join(dir, 's') });
  try {
    const stats = new StatBatches(undefined, false);
    await stats.finish(runs, pool);
    assert.ok(stats.stolen >= 1, `stolen ${stats.stolen}`);
    for (const run of runs) {
      const got = run.stats.map((s) => [s.start, s.end]).sort((a, b) => a[0]! - b[0]!);
      let next = 0;
      for (const [start, end] of got) {
        assert.equal(start, next, `${run.dirAbs}: names statted twice or not at all`);
        next = end!;
      }
      assert.equal(next, run.names.length, `${run.dirAbs}: names not statted`);
      fillRun(run);
      for (const f of run.files!) assert.equal(f.size, fs.lstatSync(f.abs).size, f.abs);
    }
  } finally {
    await pool.close();
  }
});

test('the stat op runs a claimed batch only where its claim is won', () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'a/1': '1', 'a/2': '22' });
  const { runs } = walk(join(dir, 'src'));
  const { req } = statRequest(runs, { run: 0, pos: 0 }, 10);
  const claims = new Int32Array(new SharedArrayBuffer(8));
  claims[1] = STAT_TAKEN;
  assert.equal(statBatch({ files: req, follow: false, claims, slot: 1 }).length, 0, 'a batch taken by the other thread is skipped');
  const out = statBatch({ files: req, follow: false, claims, slot: 0 });
  assert.equal(out.length, 2 * STAT_FIELDS);
  assert.equal(claims[0], STAT_TAKEN);
  assert.notEqual(claims[0], STAT_UNCLAIMED);
  assert.equal(out[STAT_FIELDS + STAT_SIZE], 2);
});

test('a store inside DIR is left out of its snapshot (the tree does not grow with the store); DIR that is the store is refused', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'p'), { 'code/a': 'alpha', '.st1': 'a file the store\'s escaped name must not match' });
  // Glob characters in the store's name: unescaped, '[1]' would match '.st1' and leave it out too.
  const store = new LocalStore(join(dir, 'p', '.st[1]'));
  const first = await snapshot(join(dir, 'p'), { store });
  const second = await snapshot(join(dir, 'p'), { store });
  assert.deepEqual(await entries(store, second.digest), ['file .st1', 'dir code', 'file code/a']);
  assert.equal(formatDigest(second.digest), formatDigest(first.digest), 'the store written by the first snapshot is not in the second');
  // Through a symlinked spelling of DIR too.
  fs.symlinkSync(join(dir, 'p'), join(dir, 'link'));
  assert.equal(formatDigest((await snapshot(join(dir, 'link'), { store })).digest), formatDigest(first.digest));
  await assert.rejects(snapshot(join(dir, 'p', '.st[1]'), { store }), (e: unknown) => e instanceof TargetError && /it is the store/.test(e.message));
});
