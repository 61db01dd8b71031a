/**
 * treecast's tar writer: random and sample trees pack to .tar, .tar.gz and .tar.zst that GNU tar,
 * bsdtar and treecast itself extract to the same tree (contents, modes, symlinks, empty files and
 * directories, mtimes, names past ustar's limits); a tree from the store packs to the same bytes
 * every time and imports back to its own digest; stdout works with --format.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { pack, formatOf } from '../src/archive/pack.js';
import { unpack } from '../src/archive/unpack.js';
import { importArchive } from '../src/archive/import.js';
import { encodeHeader, T } from '../src/archive/tar-format.js';
import { snapshot } from '../src/capture/snapshot.js';
import { LocalStore } from '../src/store/local.js';
import { formatDigest } from '../src/core/digest.js';
import { CaptureError, UsageError } from '../src/errors.js';
import { scratchDir } from './helpers/zip-craft.js';
import { compareTrees } from './helpers/zip-trees.js';
import { makeRandomTree } from './helpers/random-tree.js';
import { makeTarSampleTree, sh } from './helpers/tar-trees.js';

const BIN = new URL('../../bin/treecast', import.meta.url).pathname;
const FORMATS = [
  ['t.tar', 'tar -xf'],
  ['t.tar.gz', 'tar -xzf'],
  ['t.tar.zst', 'tar --zstd -xf'],
] as const;

test('trees packed to .tar, .tar.gz and .tar.zst extract identically with GNU tar, bsdtar and treecast', async () => {
  const dir = scratchDir('tc-tar-rt');
  const src = join(dir, 'src');
  makeTarSampleTree(src);
  makeRandomTree(join(src, 'random'), 7, { files: 300, maxDepth: 4 });
  for (const [name, gnu] of FORMATS) {
    const out = join(dir, name);
    // Files over 100 kB go through the large-file path (read from the tree by the writer, in pieces).
    await pack({ dir: src }, out, { level: 'default', jobs: 2, largeBytes: 100_000, chunkBytes: 65_536 });
    for (const [tool, cmd] of [['gnu', gnu], ['bsdtar', 'bsdtar -xf']]) {
      const x = join(dir, `${tool}-${name}`);
      fs.mkdirSync(x);
      sh(`${cmd} ${out} -C ${x}`);
      compareTrees(src, x, { symlinkTimes: true });
    }
    const ours = join(dir, `ours-${name}`);
    await unpack(out, ours, { jobs: 2 });
    compareTrees(src, ours, { symlinkTimes: true });
  }
  // The pax records are there for names past 100 bytes, and GNU tar lists them whole.
  assert.match(sh(`tar -tf ${join(dir, 't.tar')}`), new RegExp(`long/${'d'.repeat(120)}/${'e'.repeat(150)}/${'f'.repeat(200)}\\.txt`));
});

test('a tree from the store packs to the same bytes every time, and imports back to its digest', async () => {
  const dir = scratchDir('tc-tar-rt');
  const src = join(dir, 'src');
  makeTarSampleTree(src);
  makeRandomTree(join(src, 'random'), 11, { files: 200, maxDepth: 3 });
  const store = LocalStore.open(join(dir, 'store'));
  const { digest } = await snapshot(src, { store, jobs: 0 });
  for (const ext of ['tar', 'tar.gz', 'tar.zst']) {
    const a = join(dir, `a.${ext}`);
    const b = join(dir, `b.${ext}`);
    // Store blobs over 100 kB go through a temporary file (verified while copied): the same bytes.
    await pack({ store, root: digest }, a, { level: 'default', jobs: 2, largeBytes: 100_000 });
    await pack({ store, root: digest }, b, { level: 'default', jobs: 0 });
    assert.ok(fs.readFileSync(a).equals(fs.readFileSync(b)), `${ext}: same bytes from two packs`);
    const r = await importArchive(a, store, { jobs: 2 });
    assert.equal(formatDigest(r.root), formatDigest(digest), `${ext}: import gives the packed tree's digest`);
  }
  // Fixed owner, modes and time: what GNU tar lists.
  const listing = sh(`tar -tvf ${join(dir, 'a.tar')} --numeric-owner`);
  assert.match(listing, /^-rw-r--r-- 0\/0 +14 1980-01-01 00:00 a\.txt$/m);
  assert.match(listing, /^-rwxr-xr-x 0\/0 .* bin\/run\.sh$/m);
  assert.match(listing, /^lrwxrwxrwx 0\/0 .* ln -> a\.txt$/m);
});

test('a tree of more entries than pack keeps listed at once packs whole, from a directory and from the store', async () => {
  // pack forgets written items and batches every 4,096 entries: files on both sides of that point,
  // a large file (read in place by the writer) and a hardlink after it.
  const dir = scratchDir('tc-tar-rt');
  const src = join(dir, 'src');
  for (let d = 0; d < 12; d++) {
    fs.mkdirSync(join(src, `d${String(d).padStart(2, '0')}`), { recursive: true });
    for (let i = 0; i < 800; i++) fs.writeFileSync(join(src, `d${String(d).padStart(2, '0')}`, `f${i}`), `${d}/${i}\n`);
  }
  fs.writeFileSync(join(src, 'd00', 'big'), randomBytes(300_000));
  fs.writeFileSync(join(src, 'd09', 'big'), randomBytes(300_000));
  fs.linkSync(join(src, 'd00', 'f1'), join(src, 'd11', 'link'));
  const out = join(dir, 'many.tar');
  await pack({ dir: src }, out, { level: 'default', jobs: 2, largeBytes: 100_000 });
  const x = join(dir, 'gnu');
  fs.mkdirSync(x);
  sh(`tar -xf ${out} -C ${x}`);
  compareTrees(src, x, { symlinkTimes: true });
  assert.equal(fs.statSync(join(x, 'd11', 'link')).ino, fs.statSync(join(x, 'd00', 'f1')).ino, 'the hardlink after the forgetting point is one');
  const store = LocalStore.open(join(dir, 'store'));
  const { digest } = await snapshot(src, { store, jobs: 0 });
  for (const jobs of [0, 2]) {
    const fromStore = join(dir, `store-${jobs}.tar.zst`);
    await pack({ store, root: digest }, fromStore, { level: 'default', jobs, largeBytes: 100_000 });
    const r = await importArchive(fromStore, store, { jobs: 2 });
    assert.equal(formatDigest(r.root), formatDigest(digest), `jobs ${jobs}: import gives the packed tree's digest`);
  }
});

test('pack writes to stdout with --format, and refuses stdout without one', async () => {
  const dir = scratchDir('tc-tar-rt');
  const src = join(dir, 'src');
  makeTarSampleTree(src);
  const r = spawnSync('sh', ['-c', `${process.execPath} ${BIN} pack ${src} - --format tar.zst | ${process.execPath} ${BIN} unpack - ${join(dir, 'out')}`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  compareTrees(src, join(dir, 'out'), { symlinkTimes: true });
  const bad = spawnSync(process.execPath, [BIN, 'pack', src, '-'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /writing to stdout \('-'\) needs --format/);
  assert.throws(() => formatOf('-'), UsageError);
  assert.equal(formatOf('x.tgz'), 'tar.gz');
  assert.equal(formatOf('x.tzst'), 'tar.zst');
  assert.equal(formatOf('x.tar.zst', 'zip'), 'zip');
  // A name promising a format pack does not write is refused, not given a zip; --format decides.
  for (const name of ['x.tar.xz', 'x.TAR.BZ2', 'x.txz', 'x.tbz2', 'x.gz', 'x.zst', 'x.7z', 'x.tar.lz4']) {
    assert.throws(() => formatOf(name), (e: Error) => e instanceof UsageError && e.message.includes('pack writes zip, tar, tar.gz or tar.zst'), name);
  }
  assert.equal(formatOf('x.tar.xz', 'tar'), 'tar');
  for (const name of ['x.zip', 'x', 'x.jar', 'backup.2024', 'x.tar.gz.zip']) assert.equal(formatOf(name), 'zip', name);
});

test('sizes over 8 GiB and times past the octal fields are written as pax records GNU tar reads', () => {
  const dir = scratchDir('tc-tar-rt');
  const big = 9 * 2 ** 30 + 5;
  const h = encodeHeader({ name: 'big.bin', typeflag: T.FILE, mode: 0o644, size: big, mtime: 2 ** 34 });
  // Header only (the data is not there): GNU tar lists the entry, then reports the end as unexpected.
  fs.writeFileSync(join(dir, 'h.tar'), Buffer.concat([h, Buffer.alloc(1024)]));
  const r = spawnSync('tar', ['-tvf', join(dir, 'h.tar')], { encoding: 'utf8' });
  assert.match(r.stdout, new RegExp(`-rw-r--r-- .* ${big} .* big\\.bin`));
  assert.match(r.stdout, /2514-05-30/);
});

test('files larger than a batch buffer, and files streamed on their own, unpack and import whole', async () => {
  const dir = scratchDir('tc-tar-rt');
  const src = join(dir, 'src');
  fs.mkdirSync(src);
  // 9 MiB is past the 8 MiB batch buffer; 3 MiB goes through the streamed path when largeEntryBytes is 2 MiB.
  fs.writeFileSync(join(src, 'a-small'), 'small');
  fs.writeFileSync(join(src, 'b-nine-mib'), randomBytes(9 << 20));
  fs.writeFileSync(join(src, 'c-small'), 'small too');
  fs.writeFileSync(join(src, 'd-three-mib'), randomBytes(3 << 20));
  const archive = join(dir, 'a.tar.zst');
  sh(`tar --zstd -cf ${archive} -C ${src} .`);
  // Plain and gzip too: each source hands out chunks of buffers it may reuse, which a streamed
  // file's writes (queued behind the parser) must not keep.
  sh(`tar -cf ${dir}/a.tar -C ${src} . && tar -czf ${dir}/a.tar.gz -C ${src} .`);
  for (const a of [archive, `${dir}/a.tar`, `${dir}/a.tar.gz`]) {
    for (const largeEntryBytes of [undefined, 2 << 20]) {
      const out = join(dir, `out-${a.slice(-3)}-${largeEntryBytes ?? 'default'}`);
      await unpack(a, out, { jobs: 2, largeEntryBytes });
      compareTrees(src, out, { symlinkTimes: false });
    }
  }
  const store = LocalStore.open(join(dir, 'store'));
  const r = await importArchive(archive, store, { jobs: 2, largeEntryBytes: 2 << 20 });
  assert.equal(formatDigest(r.root), formatDigest((await snapshot(src, { store, jobs: 0 })).digest));
});

test('pack writes the later names of a hardlinked file as hardlink entries, which GNU tar, bsdtar and treecast restore as one inode', async () => {
  const dir = scratchDir('tc-tar-rt');
  const src = join(dir, 'src');
  fs.mkdirSync(join(src, 'sub'), { recursive: true });
  fs.writeFileSync(join(src, 'a'), 'linked data');
  fs.linkSync(join(src, 'a'), join(src, 'sub', 'b'));
  fs.linkSync(join(src, 'a'), join(src, 'z'));
  fs.writeFileSync(join(src, 'c'), 'linked data'); // same bytes, another inode: stays a file
  // A large file (through the large-file path) with two names.
  fs.writeFileSync(join(src, 'big'), randomBytes(300_000));
  fs.linkSync(join(src, 'big'), join(src, 'big2'));
  const archive = join(dir, 'h.tar');
  await pack({ dir: src }, archive, { level: 'default', jobs: 2, largeBytes: 100_000 });
  const listing = sh(`tar -tvf ${archive}`);
  assert.match(listing, /^h.* big2 link to big$/m);
  assert.match(listing, /^h.* sub\/b link to a$/m);
  assert.match(listing, /^h.* z link to a$/m);
  assert.match(listing, /^-.* c$/m);
  const ino = (p: string) => fs.statSync(p).ino;
  for (const [how, cmd] of [
    ['gnu', (o: string) => sh(`mkdir ${o} && tar -xf ${archive} -C ${o}`)],
    ['bsdtar', (o: string) => sh(`mkdir ${o} && bsdtar -xf ${archive} -C ${o}`)],
    ['treecast', async (o: string) => void (await unpack(archive, o, { jobs: 2 }))],
  ] as const) {
    const out = join(dir, `out-${how}`);
    await cmd(out);
    compareTrees(src, out, { symlinkTimes: false });
    assert.equal(ino(join(out, 'sub', 'b')), ino(join(out, 'a')), `${how}: sub/b is a`);
    assert.equal(ino(join(out, 'z')), ino(join(out, 'a')), `${how}: z is a`);
    assert.equal(ino(join(out, 'big2')), ino(join(out, 'big')), `${how}: big2 is big`);
    assert.notEqual(ino(join(out, 'c')), ino(join(out, 'a')), `${how}: c is its own file`);
  }
  // zip has no hardlinks: every name is a file.
  await pack({ dir: src }, join(dir, 'h.zip'), { level: 'default', jobs: 2 });
  sh(`mkdir ${dir}/out-zip && cd ${dir}/out-zip && unzip -q ../h.zip`);
  compareTrees(src, join(dir, 'out-zip'), { symlinkTimes: false });
});

test('a large file that changes, or becomes a symlink, between its stat and its read stops the tar pack; OUT is not written', async () => {
  const dir = scratchDir('tc-tar-rt');
  const src = join(dir, 'src');
  fs.mkdirSync(src);
  const secret = join(dir, 'secret');
  fs.writeFileSync(secret, 'not in the tree');
  for (const change of ['grow', 'shrink', 'symlink'] as const) {
    fs.writeFileSync(join(src, 'a'), 'small');
    fs.rmSync(join(src, 'b'), { force: true });
    fs.writeFileSync(join(src, 'b'), randomBytes(300_000));
    const out = join(dir, `${change}.tar`);
    // 'a' is written first; then 'b', stat-ed already by the batch that read 'a', is changed.
    const onProgress = (p: { done: number }) => {
      if (p.done !== 1) return;
      if (change === 'grow') fs.appendFileSync(join(src, 'b'), 'x');
      else if (change === 'shrink') fs.truncateSync(join(src, 'b'), 1000);
      else {
        fs.rmSync(join(src, 'b'));
        fs.symlinkSync(secret, join(src, 'b'));
      }
    };
    await assert.rejects(pack({ dir: src }, out, { level: 'default', jobs: 2, largeBytes: 100_000, onProgress }), (e) => e instanceof CaptureError && e.message.includes(join(src, 'b')), change);
    assert.equal(fs.existsSync(out), false, `${change}: no archive`);
    assert.deepEqual(fs.readdirSync(dir).filter((n) => n.includes('treecast')), [], `${change}: no temporary file left`);
  }
});
