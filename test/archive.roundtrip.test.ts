/**
 * pack -> unpack gives the same tree; import gives the digest `snapshot` gives for the unpacked
 * tree; pack from the store (digest or ref) gives the tree back; the CLI's --json and --help.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { pack } from '../src/archive/pack.js';
import { unpack } from '../src/archive/unpack.js';
import { importArchive } from '../src/archive/import.js';
import { LocalStore } from '../src/store/local.js';
import { formatDigest } from '../src/core/digest.js';
import { InterruptedError } from '../src/errors.js';
import { scratchDir } from './helpers/zip-craft.js';
import { compareTrees, makeSampleTree } from './helpers/zip-trees.js';

const bin = join(import.meta.dirname, '..', '..', 'bin', 'treecast');

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
}

test('pack then unpack gives the same tree (contents, modes, symlinks, times), inline and in workers', async () => {
  const dir = scratchDir();
  const src = join(dir, 'src');
  makeSampleTree(src);
  for (const [jobs, level] of [[0, 'fast'], [2, 'best'], [2, 'store']] as const) {
    const zip = join(dir, `${level}.zip`);
    await pack({ dir: src }, zip, { level, jobs });
    const out = join(dir, `out-${level}`);
    const r = await unpack(zip, out, { jobs });
    assert.equal(r.entries, 18);
    compareTrees(src, out, { symlinkTimes: true });
  }
});

test('unpack into a non-empty directory adds to it; files already there need --force', async () => {
  const dir = scratchDir();
  const src = join(dir, 'src');
  makeSampleTree(src);
  const zip = join(dir, 'a.zip');
  await pack({ dir: src }, zip, { level: 'default', jobs: 0 });
  const out = join(dir, 'out');
  fs.mkdirSync(join(out, 'deep'), { recursive: true });
  fs.writeFileSync(join(out, 'mine.txt'), 'mine');
  await unpack(zip, out, { jobs: 0 });
  assert.equal(fs.readFileSync(join(out, 'mine.txt'), 'utf8'), 'mine');
  assert.equal(fs.readFileSync(join(out, 'deep/x/y/z.txt'), 'utf8'), 'deep\n');
  await assert.rejects(unpack(zip, out, { jobs: 0 }), /would overwrite existing files/);
  await unpack(zip, out, { jobs: 0, force: true });
});

test('import stores the tree snapshot would: same root digest as snapshot of the unpacked tree', async () => {
  const dir = scratchDir();
  const src = join(dir, 'src');
  makeSampleTree(src);
  const zip = join(dir, 'z.zip');
  const made = spawnSync('zip', ['-q', '-r', '-y', zip, '.'], { cwd: src, encoding: 'utf8' });
  assert.equal(made.status, 0, `zip (Info-ZIP) failed: ${made.error ?? ''}${made.stderr}`);
  const storeDir = join(dir, 'store');
  const store = LocalStore.open(storeDir);
  const imported = await importArchive(zip, store, { jobs: 2, ref: 'imported', largeEntryBytes: 100_000 });
  const out = join(dir, 'out');
  await unpack(zip, out, { jobs: 0 });
  const snap = cli(['snapshot', out, '--store', join(dir, 'store2')]);
  assert.equal(snap.status, 0, snap.stderr);
  assert.equal(snap.stdout.trim().split('\n').pop(), formatDigest(imported.root));
  assert.deepEqual(store.readRef('imported'), imported.root);

  // The CLI prints the digest as the last line.
  const c = cli(['import', zip, '--store', storeDir]);
  assert.equal(c.status, 0, c.stderr);
  assert.equal(c.stdout.trim().split('\n').pop(), formatDigest(imported.root));
});

test('import into an empty store skips the existence checks; into a used store, blobs already there are left alone', async () => {
  const dir = scratchDir();
  const src = join(dir, 'src');
  fs.mkdirSync(src);
  // Duplicates within the archive: an empty store gets the same blob written twice, atomically.
  for (let i = 0; i < 700; i++) fs.writeFileSync(join(src, `f${i}`), `content ${i % 300}\n`);
  const zip = join(dir, 'z.zip');
  await pack({ dir: src }, zip, { level: 'default', jobs: 0 });
  const fresh = LocalStore.open(join(dir, 'fresh'));
  assert.equal(fresh.hasNoBlobsSync(), true);
  const a = await importArchive(zip, fresh, { jobs: 2 });
  assert.equal(fresh.hasNoBlobsSync(), false);
  assert.equal([...fresh.listHashes()].length, 301); // 300 contents + the root directory
  assert.deepEqual([...fresh.listTmpFiles()], []);
  for (const h of fresh.listHashes()) fresh.readSync({ hash: h, size: fs.statSync(fresh.blobPath(h)).size });
  // A store that holds blobs: one already there keeps its inode (a hardlinked checkout may share it).
  const used = LocalStore.open(join(dir, 'used'));
  const d = used.putSync(Buffer.from('content 5\n'));
  const ino = fs.statSync(used.blobPath(d.hash)).ino;
  const b = await importArchive(zip, used, { jobs: 2 });
  assert.deepEqual(b.root, a.root);
  assert.equal(fs.statSync(used.blobPath(d.hash)).ino, ino);
});

test('import stores every Directory message of the tree, spread over the workers, into an empty store and a used one', async () => {
  const dir = scratchDir();
  const src = join(dir, 'src');
  // 60 directories (messages), nested and side by side, so each worker gets several shares.
  for (let i = 0; i < 20; i++) {
    for (const sub of [`d${i}`, `d${i}/inner`, `d${i}/inner/deep`]) {
      fs.mkdirSync(join(src, sub), { recursive: true });
      fs.writeFileSync(join(src, sub, 'f'), `${sub}\n`);
    }
  }
  const zip = join(dir, 'z.zip');
  await pack({ dir: src }, zip, { level: 'default', jobs: 0 });
  for (const storeDir of [join(dir, 'fresh'), join(dir, 'used')]) {
    const store = LocalStore.open(storeDir);
    if (storeDir.endsWith('used')) store.putSync(Buffer.from('already here\n'));
    const { root } = await importArchive(zip, store, { jobs: 2 });
    assert.deepEqual([...store.listTmpFiles()], []);
    const out = join(dir, `out-${storeDir.endsWith('used') ? 'used' : 'fresh'}`);
    const c = cli(['checkout', formatDigest(root), out, '--store', storeDir]);
    assert.equal(c.status, 0, c.stderr);
    compareTrees(src, out, { symlinkTimes: false, times: false });
  }
});

test('pack from the store (digest or ref) writes the tree without checking it out', async () => {
  const dir = scratchDir();
  const src = join(dir, 'src');
  makeSampleTree(src);
  const zip = join(dir, 'z.zip');
  await pack({ dir: src }, zip, { level: 'default', jobs: 0 });
  const storeDir = join(dir, 'store');
  const store = LocalStore.open(storeDir);
  const { root } = await importArchive(zip, store, { jobs: 0, ref: 'sample' });
  const fromStore = join(dir, 'from-store.zip');
  const r = await pack({ store, root }, fromStore, { level: 'default', jobs: 2, largeBytes: 100_000 });
  assert.equal(r.entries, 18);
  const out = join(dir, 'out');
  await unpack(fromStore, out, { jobs: 0 });
  compareTrees(src, out, { symlinkTimes: false, times: false, modes: false });
  assert.equal(fs.statSync(join(out, 'bin/run.sh')).mode & 0o111, 0o111);
  assert.equal(fs.statSync(join(out, 'a.txt')).mode & 0o7777, 0o644);
  // One tree, one zip: packing it again gives the same bytes.
  const again = join(dir, 'again.zip');
  const c = cli(['pack', 'sample', again, '--store', storeDir, '--json']);
  assert.equal(c.status, 0, c.stderr);
  assert.deepEqual(fs.readFileSync(again), fs.readFileSync(fromStore));
  // A corrupt blob is refused, not packed.
  const victim = [...store.listHashes()].find((h) => fs.statSync(store.blobPath(h)).size === 'hello archive\n'.length)!;
  fs.chmodSync(store.blobPath(victim), 0o644);
  fs.writeFileSync(store.blobPath(victim), 'HELLO ARCHIVE\n');
  await assert.rejects(pack({ store, root }, join(dir, 'bad.zip'), { level: 'default', jobs: 0 }), /corrupt blob/);
  assert.equal(fs.existsSync(join(dir, 'bad.zip')), false);
});

test('CLI: --json summaries and --help for every option', () => {
  const dir = scratchDir();
  const src = join(dir, 'src');
  makeSampleTree(src);
  const zip = join(dir, 'c.zip');
  const p = cli(['pack', src, zip, '--json', '--level', 'fast', '--jobs', '1']);
  assert.equal(p.status, 0, p.stderr);
  const pj = JSON.parse(p.stdout);
  assert.equal(pj.ok, true);
  for (const k of ['entries', 'bytesIn', 'bytesOut', 'seconds']) assert.equal(typeof pj[k], 'number', k);
  const u = cli(['unpack', zip, join(dir, 'out'), '--json', '--max-ratio', '5000', '--max-size', '1G']);
  assert.equal(u.status, 0, u.stderr);
  const uj = JSON.parse(u.stdout);
  assert.equal(uj.entries, 18);
  assert.equal(uj.bytesIn, fs.statSync(zip).size);
  assert.equal(cli(['pack', src, zip, '--level', 'ultra']).status, 2);
  assert.equal(cli(['unpack', zip, join(dir, 'o2'), '--max-ratio', 'x']).status, 2);
  const help: Record<string, string[]> = {
    pack: ['--level', '--jobs', '--json', '--store'],
    unpack: ['--jobs', '--force', '--keep-partial', '--max-ratio', '--max-size', '--json'],
    import: ['--ref', '--jobs', '--json', '--store', '--max-ratio', '--max-size'],
  };
  for (const [cmd, opts] of Object.entries(help)) {
    const h = cli([cmd, '--help']);
    assert.equal(h.status, 0);
    for (const o of opts) assert.match(h.stdout, new RegExp(`${o}\\b.*\\S`), `${cmd} --help explains ${o}`);
  }
});

test('an aborted run leaves nothing: no partial archive, no partial tree', async () => {
  const dir = scratchDir();
  const src = join(dir, 'src');
  makeSampleTree(src);
  const zip = join(dir, 'a.zip');
  await assert.rejects(pack({ dir: src }, zip, { level: 'default', jobs: 0, signal: AbortSignal.abort() }), (e: Error) => e instanceof InterruptedError);
  assert.deepEqual(fs.readdirSync(dir), ['src']);
  await pack({ dir: src }, zip, { level: 'default', jobs: 0 });
  const out = join(dir, 'out');
  await assert.rejects(unpack(zip, out, { jobs: 0, signal: AbortSignal.abort() }), (e: Error) => e instanceof InterruptedError);
  assert.equal(fs.existsSync(out), false);
});

test('a batch of large files comes back in parts and is still written in order', async () => {
  const dir = scratchDir();
  const src = join(dir, 'src');
  fs.mkdirSync(src);
  // 6 x 5 MB in one directory: one batch by count, but over the 16 MiB a batch may return.
  for (let i = 0; i < 6; i++) fs.writeFileSync(join(src, `f${i}`), randomBytes(5 << 20));
  fs.writeFileSync(join(src, 'z'), 'last');
  for (const jobs of [0, 2]) {
    const zip = join(dir, `a${jobs}.zip`);
    const r = await pack({ dir: src }, zip, { level: 'store', jobs });
    assert.equal(r.files, 7);
    const out = join(dir, `out${jobs}`);
    await unpack(zip, out, { jobs });
    compareTrees(src, out, { symlinkTimes: false });
  }
});

test('pack lends its output buffers to batch after batch: many batches and pieced large files come back intact', async () => {
  const dir = scratchDir();
  const src = join(dir, 'src');
  // 1,500 files are 12 batches, more than the buffers pack owns (parallelism + 2), so each buffer
  // carries several batches; files over largeBytes go in pieces through the buffer's free tail.
  for (let d = 0; d < 10; d++) {
    fs.mkdirSync(join(src, `d${d}`), { recursive: true });
    for (let i = 0; i < 150; i++) {
      const size = i % 50 === 7 ? 200_000 + i : (i * 797) % 20_000;
      // Half random (stored), half repetitive (deflated), so both methods share the buffers.
      const bytes = i % 2 === 0 ? randomBytes(size) : Buffer.alloc(size, `${d}-${i} `);
      fs.writeFileSync(join(src, `d${d}`, `f${i}`), bytes);
    }
  }
  for (const [jobs, level] of [[0, 'store'], [2, 'store'], [2, 'fast'], [0, 'default']] as const) {
    const zip = join(dir, `a-${jobs}-${level}.zip`);
    const r = await pack({ dir: src }, zip, { level, jobs, largeBytes: 64 << 10, chunkBytes: 48 << 10 });
    assert.equal(r.files, 1500);
    const out = join(dir, `out-${jobs}-${level}`);
    await unpack(zip, out, { jobs: 0 });
    compareTrees(src, out, { symlinkTimes: false });
  }
});
