/**
 * The tar pack's fast paths against the plain ones they replace: headers written in place into a
 * reused buffer are the bytes encodeHeader makes, and a pack from the store is byte for byte the
 * archive a straightforward writer (encodeHeader, the data, zero padding) makes of the same tree.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { pack, readerThreads, STORE_MTIME } from '../src/archive/pack.js';
import { BLOCK, END_OF_ARCHIVE, T, encodeHeader, padding, writeUstarHeader } from '../src/archive/tar-format.js';
import { snapshot } from '../src/capture/snapshot.js';
import { LocalStore } from '../src/store/local.js';
import { TreeReader } from '../src/store/tree-reader.js';
import type { Digest } from '../src/core/digest.js';
import { BlobNotFoundError, CaptureError, TargetError } from '../src/errors.js';
import { compressBatch } from '../src/archive/pack-op.js';
import { scratchDir } from './helpers/zip-craft.js';
import { makeRandomTree, rng } from './helpers/random-tree.js';
import { makeTarSampleTree, sh } from './helpers/tar-trees.js';

test('writeUstarHeader writes the block encodeHeader makes, and refuses what needs a pax record', () => {
  const rand = rng(9);
  const pick = (n: number) => Math.floor(rand() * n);
  const part = () => {
    const chars = 'abcdefghij0123456789-_.';
    let s = '';
    for (let i = 1 + pick(40); i > 0; i--) s += chars[pick(chars.length)];
    return s;
  };
  const slab = Buffer.alloc(3 * BLOCK, 0xee);
  let written = 0;
  let refused = 0;
  for (let i = 0; i < 5000; i++) {
    const parts: string[] = [];
    for (let n = 1 + pick(9); n > 0; n--) parts.push(part());
    let name = parts.join('/');
    if (pick(10) === 0) name += 'é'; // not ASCII: pax
    const typeflag = [T.FILE, T.DIR, T.SYMLINK, T.HARDLINK][pick(4)]!;
    if (typeflag === T.DIR) name += '/';
    const linkname = typeflag === T.SYMLINK || typeflag === T.HARDLINK ? (pick(5) === 0 ? 'x'.repeat(95 + pick(10)) : parts.slice(0, 1 + pick(3)).join('/')) : undefined;
    const size = typeflag === T.FILE ? [0, 1, 511, 512, 4096 + pick(1e6), 0o77777777777, 0o77777777777 + 1][pick(7)]! : 0;
    const mtime = [0, 1_700_000_000 + pick(1e6), -1, 0o77777777777, 2 ** 34][pick(5)]!;
    const mode = [0o644, 0o755, 0o4755, 0o777, 0o100644][pick(5)]!;
    const fields = { name, typeflag, mode, size, mtime, linkname };
    const expected = encodeHeader(fields);
    const ok = writeUstarHeader(slab, BLOCK, name, typeflag, mode, size, mtime, linkname);
    if (ok) {
      written++;
      assert.equal(expected.length, BLOCK, `${name}: encodeHeader needed pax, writeUstarHeader did not`);
      assert.ok(slab.subarray(BLOCK, 2 * BLOCK).equals(expected), `${name}: same block`);
    } else {
      refused++;
      assert.ok(expected.length > BLOCK, `${name}: refused, though a ustar block holds it`);
    }
    // Nothing outside the block is touched.
    assert.ok(slab.subarray(0, BLOCK).every((b) => b === 0xee) && slab.subarray(2 * BLOCK).every((b) => b === 0xee), `${name}: stays in its block`);
  }
  assert.ok(written > 1000 && refused > 500, `both paths exercised: ${written} written, ${refused} refused`);
});

/** The archive of a store tree as the plain writer makes it: each header by encodeHeader, data, padding. */
async function referenceTar(store: LocalStore, root: Digest): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const e of new TreeReader(store).walk(root)) {
    if (e.type === 'dir') parts.push(encodeHeader({ name: `${e.path}/`, typeflag: T.DIR, mode: 0o755, size: 0, mtime: STORE_MTIME }));
    else if (e.type === 'symlink') parts.push(encodeHeader({ name: e.path, typeflag: T.SYMLINK, mode: 0o777, size: 0, mtime: STORE_MTIME, linkname: e.target }));
    else {
      const data = e.digest.size === 0 ? Buffer.alloc(0) : fs.readFileSync(store.blobPath(e.digest.hash));
      parts.push(encodeHeader({ name: e.path, typeflag: T.FILE, mode: e.executable ? 0o755 : 0o644, size: data.length, mtime: STORE_MTIME }), data, Buffer.alloc(padding(data.length)));
    }
  }
  parts.push(END_OF_ARCHIVE);
  const size = parts.reduce((n, p) => n + p.length, 0);
  parts.push(Buffer.alloc((10240 - (size % 10240)) % 10240));
  return Buffer.concat(parts);
}

test('a store tree packs to the bytes of the plain writer: long, non-ASCII and split names, many entries between two files, large files', async () => {
  const dir = scratchDir('tc-tar-pack');
  const src = join(dir, 'src');
  makeTarSampleTree(src);
  makeRandomTree(join(src, 'random'), 5, { files: 400, maxDepth: 4 });
  // 1,500 directories in a row: more headers between two files than the writer's header buffer holds.
  for (let i = 0; i < 1500; i++) fs.mkdirSync(join(src, 'many', `d${String(i).padStart(4, '0')}-${'n'.repeat(60)}`), { recursive: true });
  fs.writeFileSync(join(src, 'many', 'zz-after'), 'after the directories');
  fs.mkdirSync(join(src, 'split', 'p'.repeat(90)), { recursive: true });
  fs.writeFileSync(join(src, 'split', 'p'.repeat(90), 'q'.repeat(99)), 'a name in ustar prefix and name');
  fs.writeFileSync(join(src, 'naïve-名前.txt'), 'pax path');
  fs.writeFileSync(join(src, 'big'), randomBytes(300_000));
  fs.writeFileSync(join(src, 'big-odd'), randomBytes(150_001));
  const store = LocalStore.open(join(dir, 'store'));
  const { digest } = await snapshot(src, { store, jobs: 0 });
  const expected = await referenceTar(store, digest);
  // .tar.zst is read inline on fewer than four cores (readerThreads), by a worker on more.
  const plain = (out: string) => (out.endsWith('.zst') ? execFileSync('zstd', ['-dcq', out], { maxBuffer: 64 << 20 }) : out.endsWith('.gz') ? execFileSync('gzip', ['-dc', out], { maxBuffer: 64 << 20 }) : fs.readFileSync(out));
  for (const [label, opts, ext] of [
    ['default', {}, 'tar'],
    ['large files via temporary files', { largeBytes: 100_000 }, 'tar'],
    ['inline', { jobs: 0 }, 'tar'],
    ['zstd', {}, 'tar.zst'],
    ['gzip', {}, 'tar.gz'],
    ['zstd, large files via temporary files', { largeBytes: 100_000 }, 'tar.zst'],
  ] as const) {
    const out = join(dir, `${label}.${ext}`);
    await pack({ store, root: digest }, out, { level: 'default', jobs: 2, ...opts });
    const got = plain(out);
    assert.equal(got.length, expected.length, `${label}: length`);
    const at = got.findIndex((b, i) => b !== expected[i]);
    assert.equal(at, -1, `${label}: first differing byte at ${at}`);
  }
});

test('the listing runs while the archive is written: an archive written inside the packed directory is not packed into itself, under any spelling of either', async () => {
  const dir = scratchDir('tc-tar-pack');
  const src = join(dir, 'src');
  // 'a' holds more than the batches listed before the archive is created; 'zz', where the
  // archive goes, is listed after that, while its temporary file is being written.
  fs.mkdirSync(join(src, 'a'), { recursive: true });
  for (let i = 0; i < 1000; i++) fs.writeFileSync(join(src, 'a', `f${i}`), `file ${i}\n`);
  makeRandomTree(join(src, 'm'), 3, { files: 300, maxDepth: 4 });
  fs.mkdirSync(join(src, 'zz'));
  fs.writeFileSync(join(src, 'zz', 'last'), 'the last file');
  // The order a whole listing gives: parents first, names in byte order, each directory's subtree in its place.
  const expected: string[] = [];
  const walk = (abs: string, rel: string) => {
    for (const n of fs.readdirSync(abs).sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)))) {
      const isDir = fs.lstatSync(join(abs, n)).isDirectory();
      expected.push(isDir ? `${rel}${n}/` : rel + n);
      if (isDir) walk(join(abs, n), `${rel}${n}/`);
    }
  };
  walk(src, '');
  // DIR or OUT named through a symlink (as GNU tar tells "file is the archive" by its inode): the
  // archive's temporary file, listed under another path, was packed, half-written.
  fs.symlinkSync(src, join(dir, 'src-link'));
  fs.symlinkSync(join(src, 'zz'), join(dir, 'zz-link'));
  for (const [srcPath, outDir] of [[src, join(src, 'zz')], [join(dir, 'src-link'), join(src, 'zz')], [src, join(dir, 'zz-link')], [join(dir, 'src-link'), join(src, 'zz', '..', 'zz')]] as const) {
    for (const name of ['out.tar', 'out.tar.zst', 'out.zip']) {
      const out = join(outDir, name);
      // An OUT there before is the archive being replaced: not packed either.
      fs.writeFileSync(out, 'an older archive');
      await pack({ dir: srcPath }, out, { level: 'default', jobs: 2 });
      const listed = name.endsWith('.zip') ? sh(`unzip -Z1 ${out}`) : sh(`tar -tf ${out}`);
      const names = listed.split('\n').filter((n) => n !== '');
      assert.equal(names.filter((n) => n.includes('out.') || n.includes('treecast')).length, 0, `${srcPath} -> ${out}: no archive in the archive`);
      assert.deepEqual(name.endsWith('.zip') ? names.filter((n) => !n.endsWith('/')) : names, name.endsWith('.zip') ? expected.filter((n) => !n.endsWith('/')) : expected, `${srcPath} -> ${out}: every entry, in order`);
      fs.rmSync(out);
    }
  }
});

test('an OUT replaced keeps its permissions (a private archive stays private); a new OUT gets 0644 less the umask; a symlink at OUT is replaced, never written through', async () => {
  const dir = scratchDir('tc-tar-pack');
  const src = join(dir, 'src');
  fs.mkdirSync(src);
  fs.writeFileSync(join(src, 'a'), 'a');
  const umask = process.umask(0o022);
  try {
    for (const name of ['out.tar', 'out.tar.zst', 'out.zip']) {
      const out = join(dir, name);
      fs.writeFileSync(out, 'an older archive', { mode: 0o600 });
      fs.chmodSync(out, 0o600);
      await pack({ dir: src }, out, { level: 'default', jobs: 1 });
      assert.equal(fs.statSync(out).mode & 0o777, 0o600, `${name}: still private`);
      assert.notEqual(fs.readFileSync(out, 'utf8'), 'an older archive', `${name}: replaced`);
      fs.rmSync(out);
      await pack({ dir: src }, out, { level: 'default', jobs: 1 });
      assert.equal(fs.statSync(out).mode & 0o777, 0o644, `${name}: a new archive`);
    }
    const target = join(dir, 'target');
    fs.writeFileSync(target, 'not an archive', { mode: 0o600 });
    fs.symlinkSync(target, join(dir, 'link.tar'));
    await pack({ dir: src }, join(dir, 'link.tar'), { level: 'default', jobs: 1 });
    assert.equal(fs.readFileSync(target, 'utf8'), 'not an archive');
    assert.ok(fs.lstatSync(join(dir, 'link.tar')).isFile());
  } finally {
    process.umask(umask);
  }
});

test('a store inside the packed directory is left out, under any spelling of either, as snapshot leaves it out; packing the store itself packs it', async () => {
  const dir = scratchDir('tc-tar-pack');
  const src = join(dir, 'src');
  fs.mkdirSync(join(src, 'sub'), { recursive: true });
  fs.writeFileSync(join(src, 'a'), 'a');
  fs.writeFileSync(join(src, 'sub', 'b'), 'b');
  // A store at src/sub/.st[1], beside a file .st1 and a directory .st2 that are the user's.
  const storeRoot = join(src, 'sub', '.st[1]');
  const store = LocalStore.open(storeRoot);
  const { digest } = await snapshot(src, { store, jobs: 0 });
  fs.writeFileSync(join(src, 'sub', '.st1'), 'mine');
  fs.mkdirSync(join(src, 'sub', '.st2'));
  fs.symlinkSync(src, join(dir, 'src-link'));
  const expected = ['a', 'sub/', 'sub/.st1', 'sub/.st2/', 'sub/b'];
  for (const [srcPath, storePath] of [[src, storeRoot], [join(dir, 'src-link'), storeRoot], [src, join(dir, 'src-link', 'sub', '.st[1]')]] as const) {
    for (const name of ['out.tar', 'out.zip']) {
      const out = join(dir, name);
      await pack({ dir: srcPath }, out, { level: 'default', jobs: 2, storeRoot: storePath });
      const names = (name.endsWith('.zip') ? sh(`unzip -Z1 '${out}'`) : sh(`tar -tf '${out}'`)).split('\n').filter((n) => n !== '');
      assert.deepEqual(names.sort(), expected, `${srcPath} with the store ${storePath}: ${name}`);
      fs.rmSync(out);
    }
  }
  // The same tree from the store packs the same names (directories aside, which a zip of a store tree lists too).
  await pack({ store, root: digest }, join(dir, 'tree.tar'), { level: 'default', jobs: 2 });
  assert.deepEqual(sh(`tar -tf '${join(dir, 'tree.tar')}'`).split('\n').filter((n) => n !== '').sort(), ['a', 'sub/', 'sub/b']);
  // Named as DIR, the store is what the user asked for.
  await pack({ dir: storeRoot }, join(dir, 'store.tar'), { level: 'default', jobs: 2, storeRoot });
  assert.ok(sh(`tar -tf '${join(dir, 'store.tar')}'`).split('\n').includes(`cas/${digest.hash.slice(0, 2)}/${digest.hash}`), 'the store packed whole');
});

test('a compressed tar gets one reader thread per four cores (.tar.zst none below four: it reads inline), at most --jobs; other formats get --jobs', () => {
  assert.equal(readerThreads('tar.zst', 2, 2), 0);
  assert.equal(readerThreads('tar.gz', 2, 2), 1);
  assert.equal(readerThreads('tar.gz', 4, 3), 1);
  assert.equal(readerThreads('tar.zst', 2, 4), 1);
  assert.equal(readerThreads('tar.gz', 8, 16), 4);
  assert.equal(readerThreads('tar.zst', 2, 16), 2);
  assert.equal(readerThreads('tar.zst', 0, 16), 0);
  assert.equal(readerThreads('tar', 2, 2), 2);
  assert.equal(readerThreads('zip', 3, 2), 3);
});

test('an error of the listing after the first batches stops the pack with its typed error; OUT is not written', async () => {
  const dir = scratchDir('tc-tar-pack');
  const src = join(dir, 'src');
  fs.mkdirSync(join(src, 'a'), { recursive: true });
  for (let i = 0; i < 1000; i++) fs.writeFileSync(join(src, 'a', `f${i}`), `file ${i}\n`);
  // Listed after the first batches have gone to the readers: nests deeper than pack allows.
  let deep = join(src, 'zz');
  for (let i = 0; i < 1030; i++) deep = join(deep, 'd');
  fs.mkdirSync(deep, { recursive: true });
  for (const name of ['out.tar.zst', 'out.zip']) {
    const out = join(dir, name);
    await assert.rejects(pack({ dir: src }, out, { level: 'default', jobs: 2 }), (e) => e instanceof TargetError && /nests deeper than 1024 levels/.test(e.message), name);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['src'], `${name}: no archive, no temporary file`);
  }
});

test('a file whose bytes run past its size, or end before it, is refused by the reader (procfs and sysfs files do both)', (t) => {
  // /proc files stat as 0 bytes and hold more; sysfs files stat as 4096 bytes and hold a few.
  const grown = '/proc/self/status';
  const shrunk = ['/sys/devices/system/cpu/online', '/sys/kernel/uevent_seqnum'].find((p) => fs.existsSync(p));
  if (!fs.existsSync(grown) || shrunk === undefined) {
    t.skip('needs procfs and sysfs');
    return;
  }
  for (const src of [grown, shrunk]) {
    for (const batch of [{ level: 0, noCrc: true }, { level: 6 }]) {
      assert.throws(() => compressBatch({ ...batch, files: [{ src }], tmpPrefix: '/nonexistent/' }), (e) => e instanceof CaptureError && e.message === `${src} changed while it was being read`, `${src} at level ${batch.level}`);
    }
  }
});

test('a store tree whose directory message is missing, found after the first batches, stops the pack with a typed error; OUT is not written', async () => {
  const dir = scratchDir('tc-tar-pack');
  const src = join(dir, 'src');
  fs.mkdirSync(join(src, 'a'), { recursive: true });
  for (let i = 0; i < 1000; i++) fs.writeFileSync(join(src, 'a', `f${i}`), `file ${i}\n`);
  fs.mkdirSync(join(src, 'zz', 'sub'), { recursive: true });
  fs.writeFileSync(join(src, 'zz', 'sub', 'x'), 'x');
  const store = LocalStore.open(join(dir, 'store'));
  const { digest } = await snapshot(src, { store, jobs: 0 });
  const zz = new TreeReader(store).getSync(digest).directories.find((d) => d.name === 'zz')!.digest;
  // Without the tree's pack of directory messages, each message is read from its blob.
  fs.rmSync(join(store.root, 'trees', digest.hash), { force: true });
  fs.rmSync(store.blobPath(zz.hash));
  const outDir = join(dir, 'out');
  fs.mkdirSync(outDir);
  for (const name of ['out.tar.zst', 'out.zip']) {
    await assert.rejects(pack({ store, root: digest }, join(outDir, name), { level: 'default', jobs: 2 }), (e) => e instanceof BlobNotFoundError && e.message.includes(zz.hash), name);
    assert.deepEqual(fs.readdirSync(outDir), [], `${name}: no archive, no temporary file`);
  }
});

test("a store tree whose file's blob is gone packs to nothing: exit 3 naming the blob (as checkout), for every format; an OUT already there is kept", async () => {
  const dir = scratchDir('tc-tar-pack');
  const src = join(dir, 'src');
  fs.mkdirSync(join(src, 'd'), { recursive: true });
  fs.writeFileSync(join(src, 'a'), 'kept blob');
  fs.writeFileSync(join(src, 'd', 'gone'), 'removed blob');
  const store = LocalStore.open(join(dir, 'store'));
  const { digest } = await snapshot(src, { store, jobs: 0 });
  const gone = new TreeReader(store).getSync(new TreeReader(store).getSync(digest).directories[0]!.digest).files[0]!.digest;
  fs.chmodSync(join(store.blobPath(gone.hash), '..'), 0o755);
  fs.rmSync(store.blobPath(gone.hash));
  for (const name of ['out.zip', 'out.tar', 'out.tar.gz', 'out.tar.zst']) {
    const out = join(dir, name);
    fs.writeFileSync(out, 'the archive from before');
    await assert.rejects(pack({ store, root: digest }, out, { level: 'default', jobs: 1 }), (e) => {
      assert.ok(e instanceof BlobNotFoundError, `${name}: ${String(e)}`);
      assert.equal(e.exitCode, 3);
      assert.equal(e.digest, `${gone.hash}/${gone.size}`);
      assert.match(e.message, new RegExp(`blob ${gone.hash}/${gone.size} is not in the store`));
      return true;
    });
    assert.equal(fs.readFileSync(out, 'utf8'), 'the archive from before', `${name} kept`);
  }
});

test('a name or symlink target on disk that is not UTF-8 is refused naming it (bytes escaped), never packed under its lossy spelling, also beside a real U+FFFD name', async () => {
  const dir = scratchDir('tc-tar-pack');
  const src = join(dir, 'src');
  fs.mkdirSync(src);
  fs.writeFileSync(join(src, 'b\ufffda'), 'a real U+FFFD name');
  fs.writeFileSync(Buffer.concat([Buffer.from(`${src}/`), Buffer.from([0x62, 0xff, 0x61])]), 'bytes');
  for (const name of ['out.tar', 'out.zip']) {
    await assert.rejects(
      pack({ dir: src }, join(dir, name), { level: 'default', jobs: 1 }),
      (e: unknown) => e instanceof CaptureError && e.message.includes(`${src}/b\\xffa`) && /not valid UTF-8/.test(e.message),
    );
    assert.ok(!fs.existsSync(join(dir, name)), `${name}: no archive written`);
  }
  fs.rmSync(Buffer.concat([Buffer.from(`${src}/`), Buffer.from([0x62, 0xff, 0x61])]));
  // A symlink target is read the same lossy way.
  fs.symlinkSync(Buffer.from([0x74, 0xff, 0x78]) as unknown as string, join(src, 'l'));
  for (const name of ['out.tar', 'out.zip']) {
    await assert.rejects(pack({ dir: src }, join(dir, name), { level: 'default', jobs: 1 }), (e: unknown) => e instanceof CaptureError && e.message.includes("'t\\xffx'"));
    assert.ok(!fs.existsSync(join(dir, name)), `${name}: no archive written`);
  }
  fs.rmSync(join(src, 'l'));
  await pack({ dir: src }, join(dir, 'out.tar'), { level: 'default', jobs: 1 });
  assert.match(execFileSync('tar', ['tf', join(dir, 'out.tar')], { encoding: 'utf8' }), /b\ufffda/);
});
