/**
 * One regression test per hostile-archive case of DESIGN.md: each crafted archive is refused with
 * an error naming the entry and the reason, nothing is written outside the target, and the target
 * holds nothing from the refused archive.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { unpack } from '../src/archive/unpack.js';
import { ArchiveError, TargetError, UnsafePathError } from '../src/errors.js';
import { craftZip, listTree, scratchDir, type CraftEntry } from './helpers/zip-craft.js';

interface Setup {
  dir: string;
  zip: string;
  target: string;
  outside: string;
}

function setup(entries: CraftEntry[] | Buffer): Setup {
  const dir = scratchDir('tc-hostile');
  const zip = join(dir, 'a.zip');
  fs.writeFileSync(zip, Buffer.isBuffer(entries) ? entries : craftZip(entries));
  // The target lies two levels down so '../x' and '../../x' would land in `outside`, which must stay empty.
  const outside = join(dir, 'outside');
  const target = join(outside, 'inner', 'target');
  fs.mkdirSync(join(outside, 'inner'), { recursive: true });
  return { dir, zip, target, outside };
}

/** Unpacks, expects a refusal of `cls` whose message matches `msg`, and checks nothing was left. */
async function refused(entries: CraftEntry[] | Buffer, cls: new (...a: never[]) => Error, msg: RegExp, opts: { jobs?: number; maxRatio?: number; maxSize?: number; safeLinks?: boolean } = {}): Promise<Setup> {
  const s = setup(entries);
  await assert.rejects(unpack(s.zip, s.target, { jobs: opts.jobs ?? 0, maxRatio: opts.maxRatio, maxSize: opts.maxSize, safeLinks: opts.safeLinks }), (err: Error) => {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${err.constructor.name}: ${err.message}`);
    assert.match(err.message, msg);
    return true;
  });
  assert.deepEqual(listTree(s.target), [], 'target holds nothing from the refused archive');
  assert.deepEqual(listTree(s.outside), ['inner/'], 'nothing written outside the target');
  assert.ok(!fs.existsSync('/tmp/evil-treecast-test'), 'nothing written to an absolute path');
  return s;
}

const file = (name: string, data = 'x'): CraftEntry => ({ name, data });

test('names that climb out or are absolute are refused', async () => {
  for (const name of ['../x', 'a/../../x', '/tmp/evil-treecast-test', '////tmp/evil-treecast-test', 'C:\\x', '..\\x', 'C:x', 'a/./b', 'a//b', './x']) {
    await refused([file('ok.txt'), file(name)], UnsafePathError, new RegExp(`archive entry '${name.replace(/[\\.*+?^$()[\]{}|/]/g, '\\$&')}': `));
  }
});

test('a file through an archive symlink is refused (absolute target and in-tree target)', async () => {
  await refused([{ name: 'd', data: '/tmp', mode: 0o120777 }, file('d/evil-treecast-test')], UnsafePathError, /'d\/evil-treecast-test'.*lies under 'd', which is a symlink|'d'.*absolute/);
  await refused([file('sub/keep'), { name: 'd', data: 'sub', mode: 0o120777 }, file('d/evil')], UnsafePathError, /'d\/evil': lies under 'd', which is a symlink/);
});

test('a directory, then a same-named symlink, then a file through it is refused', async () => {
  await refused([{ name: 'd/' }, { name: 'd', data: 'sub', mode: 0o120777 }, file('d/evil')], UnsafePathError, /'d': duplicate entry \(dir and symlink\)/);
});

test('with --safe-links, symlink targets that escape are refused', async () => {
  const cases: [string, string, RegExp][] = [
    ['l', '/etc/passwd', /'l': symlink target '\/etc\/passwd' is absolute/],
    ['l', '..', /'l': symlink target '\.\.' points outside/],
    ['a/l', '../../x', /'a\/l': symlink target '\.\.\/\.\.\/x' points outside/],
    ['l', 'b/../../x', /'l': symlink target 'b\/\.\.\/\.\.\/x' has '\.\.' after a name/],
    ['l', 'C:\\Windows', /Windows path syntax/],
  ];
  for (const [name, target, msg] of cases) await refused([{ name, data: target, mode: 0o120777 }], UnsafePathError, msg, { safeLinks: true });
  // '.' then '..' through it: 'b -> .' is fine alone, but 'a -> b/../x' could climb out through b.
  await refused([{ name: 'b', data: '.', mode: 0o120777 }, { name: 'a', data: 'b/../x', mode: 0o120777 }], UnsafePathError, /'a': symlink target 'b\/\.\.\/x' has '\.\.' after a name/, { safeLinks: true });
});

test('duplicate entries of every kind are refused', async () => {
  await refused([file('f'), file('f')], UnsafePathError, /'f': duplicate entry \(file and file\)/);
  await refused([file('f'), { name: 'f/' }], UnsafePathError, /'f\/': duplicate entry \(file and dir\)/);
  await refused([{ name: 'f/' }, file('f')], UnsafePathError, /'f': duplicate entry \(dir and file\)/);
  await refused([{ name: 'd/' }, { name: 'd', data: 'x', mode: 0o120777 }], UnsafePathError, /'d': duplicate entry \(dir and symlink\)/);
  await refused([{ name: 'd/' }, { name: 'd/' }], UnsafePathError, /'d\/': duplicate entry \(dir and dir\)/);
  await refused([file('a/b'), file('a')], UnsafePathError, /'a': is a file, but earlier entries lie under it/);
});

test('devices, FIFOs and sockets are refused', async () => {
  await refused([{ name: 'null', mode: 0o020666 }], ArchiveError, /'null': is a character device/);
  await refused([{ name: 'sda', mode: 0o060660 }], ArchiveError, /'sda': is a block device/);
  await refused([{ name: 'fifo', mode: 0o010644 }], ArchiveError, /'fifo': is a FIFO/);
  await refused([{ name: 'sock', mode: 0o140755 }], ArchiveError, /'sock': is a socket/);
});

test('setuid, setgid and sticky bits are stripped with a warning', async () => {
  const s = setup([{ name: 'suid', data: '#!/bin/sh\n', mode: 0o106755 }, { name: 'tmp/', mode: 0o041777 }]);
  const warnings: string[] = [];
  await unpack(s.zip, s.target, { jobs: 0, onWarning: (code, m) => warnings.push(`${code} ${m}`) });
  assert.equal(fs.statSync(join(s.target, 'suid')).mode & 0o7777, 0o755);
  assert.equal(fs.statSync(join(s.target, 'tmp')).mode & 0o7777, 0o777);
  assert.equal(warnings.length, 2);
  assert.match(warnings[0]!, /ARCHIVE_MODE_STRIPPED 'suid': setuid\/setgid\/sticky bits stripped/);
});

test('a name that is not UTF-8 is refused, its bytes shown escaped', async () => {
  // Crafted with a placeholder byte, then turned into 0xFF in the local and central headers alike.
  const zip = craftZip([file('ok.txt'), file('bad-~.txt')]);
  for (let i = zip.indexOf('bad-~'); i >= 0; i = zip.indexOf('bad-~', i + 1)) zip[i + 4] = 0xff;
  await refused(zip, UnsafePathError, /^archive entry 1 \('bad-\\xff\.txt'\): name is not valid UTF-8/);
});

test('names over 4 KB and nesting deeper than 1024 levels are refused', async () => {
  const long = Array.from({ length: 21 }, () => 'n'.repeat(200)).join('/');
  await refused([file(long)], UnsafePathError, /name is longer than 4096 bytes/);
  await refused([file(`${'a/'.repeat(1030)}x`)], UnsafePathError, /nests deeper than 1024 levels/);
  await refused([file('n'.repeat(256))], UnsafePathError, /longer than 255 bytes/);
});

test('sizes that disagree with the data are refused', async () => {
  // Stored entry: sizes must be equal (found before writing).
  await refused([file('a'), { name: 'b', data: 'hello', method: 0, size: 3 }], ArchiveError, /'b': sizes disagree/);
  // Deflated entry that inflates to more than it declares (found while extracting: 'a' is removed again).
  const big = 'x'.repeat(5000);
  await refused([file('a'), { name: 'b', data: big, size: 100, crc: zlib.crc32(big.slice(0, 100)) }], ArchiveError, /'b': inflates to more than its declared 100 bytes/, { maxRatio: 1e9 });
  // ...and to less.
  await refused([file('a'), { name: 'b', data: 'short', size: 50 }], ArchiveError, /'b': sizes disagree: declared 50 bytes, data holds 5/);
  // Corrupt data: CRC mismatch.
  await refused([file('a'), { name: 'b', data: 'hello', crc: 1234, localCrc: 1234 }], ArchiveError, /'b': CRC-32 mismatch/);
});

test('local headers that disagree with the central directory are refused', async () => {
  await refused([file('a'), { name: 'b', data: 'hello', localName: 'c' }], ArchiveError, /'b': local header names a different entry/);
  // A name one byte longer or shorter, and one of the same UTF-8 length that differs in a
  // multi-byte character.
  await refused([file('a'), { name: 'b', data: 'hello', localName: 'bc' }], ArchiveError, /'b': local header names a different entry/);
  await refused([file('a'), { name: 'bc', data: 'hello', localName: 'b' }], ArchiveError, /'bc': local header names a different entry/);
  await refused([file('a'), { name: 'caf\u00e9', data: 'hello', localName: 'caf\u00e8' }], ArchiveError, /'caf\u00e9': local header names a different entry/);
  // Names longer than the buffer a thread first compares them in (1 KiB), differing in the last byte.
  const long = `${'d'.repeat(200)}/`.repeat(8);
  await refused([file('a'), { name: `${long}x`, data: 'hello', localName: `${long}y` }], ArchiveError, /local header names a different entry/);
  await refused([file('a'), { name: 'b', data: 'hello', localCrc: 7 }], ArchiveError, /'b': local header CRC disagrees/);
  await refused([file('a'), { name: 'b', data: 'hello', method: 0, localMethod: 8 }], ArchiveError, /'b': local header says method 8/);
  await refused([file('a'), { name: 'b', data: 'hello', offsetDelta: 1 }], ArchiveError, /'b': (local header is missing|.*overlap)/);
});

test('long and non-ASCII names whose local header agrees are accepted', async () => {
  const long = `${'d'.repeat(200)}/`.repeat(8);
  const s = setup([file('a'), { name: 'caf\u00e9', data: 'hello' }, { name: `${long}x`, data: 'long' }, file('b')]);
  await unpack(s.zip, s.target, { jobs: 0 });
  assert.equal(fs.readFileSync(join(s.target, `${long}x`), 'utf8'), 'long');
  assert.equal(fs.readFileSync(join(s.target, 'caf\u00e9'), 'utf8'), 'hello');
});

test('overlapping entries are refused before anything is written', async () => {
  await refused([file('a', 'hello'), { name: 'b', data: 'hello', sameOffsetAs: 0 }], ArchiveError, /shares its local data with entry/);
  await refused([file('a', 'x'.repeat(100)), file('b', 'y'.repeat(100)), { name: 'c', data: 'z', compressedSize: 400, method: 0, size: 400 }], ArchiveError, /'c': data runs into the central directory|overlap/);
  await refused([{ name: 'a', data: 'hello', method: 0, compressedSize: 60, size: 60 }, file('b', 'world')], ArchiveError, /'a': data overlaps entry 'b'/);
});

test('compression ratios past --max-ratio and totals past --max-size are refused', async () => {
  const zeros = Buffer.alloc(1 << 20);
  await refused([file('ok'), { name: 'bomb', data: zeros }], ArchiveError, /'bomb': compression ratio \d+:1 exceeds --max-ratio 100/, { maxRatio: 100 });
  // A declared size far beyond its data (the classic bomb header), with the default ratio.
  await refused([{ name: 'bomb', data: 'abc', size: 1 << 30 }], ArchiveError, /'bomb': compression ratio .* exceeds --max-ratio 1000/);
  await refused([file('a', 'x'.repeat(600)), file('b', 'y'.repeat(600))], ArchiveError, /'b': total size 1200 bytes exceeds --max-size 1000/, { maxSize: 1000 });
});

test('a truncated or damaged archive is refused', async () => {
  const good = craftZip([file('a', 'hello'), file('b', 'world')]);
  for (const cut of [good.length - 1, good.length - 30, 40, 10, 0]) {
    await refused(good.subarray(0, cut), ArchiveError, /truncated|not a zip/);
  }
  // The tail intact but the data cut out of the middle: the central directory no longer fits.
  await refused(Buffer.concat([good.subarray(0, 20), good.subarray(40)]), ArchiveError, /truncated|does not end|damaged|overlap|missing/);
  await refused(Buffer.from('not a zip at all, just some text that is long enough'), ArchiveError, /not a zip/);
});

test('encrypted entries and unknown methods are refused', async () => {
  const z = craftZip([{ name: 'a', data: 'hello', method: 0 }]);
  const cd = z.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
  const enc = Buffer.from(z);
  enc.writeUInt16LE(1, cd + 8);
  await refused(enc, ArchiveError, /'a': is encrypted/);
  const bz = Buffer.from(z);
  bz.writeUInt16LE(12, cd + 10);
  await refused(bz, ArchiveError, /'a': uses compression method 12/);
});

test('a data error while extracting removes what was written; --keep-partial keeps the entries before it', async () => {
  const entries: CraftEntry[] = [];
  for (let i = 0; i < 1200; i++) entries.push(file(`d${i % 7}/f${i}`, `content ${i}`.repeat(20)));
  entries.splice(900, 0, { name: 'bad', data: 'hello', crc: 99, localCrc: 99 });
  // Through worker threads too, so batches in flight are accounted for.
  for (const jobs of [0, 2]) await refused(entries, ArchiveError, /'bad': CRC-32 mismatch/, { jobs });

  const s = setup(entries);
  await assert.rejects(unpack(s.zip, s.target, { jobs: 2, keepPartial: true }), /'bad': CRC-32 mismatch/);
  const kept = listTree(s.target).filter((p) => !p.endsWith('/'));
  assert.equal(kept.length, 900, 'exactly the 900 entries before the bad one are kept');
  assert.ok(kept.every((p) => Number(/f(\d+)$/.exec(p)![1]) < 900));
});

test('a symlink already in the target is never written through', async () => {
  // Parent directory replaced by a symlink pointing outside.
  const s = setup([file('d/evil', 'pwned')]);
  fs.mkdirSync(s.target, { recursive: true });
  fs.symlinkSync(s.outside, join(s.target, 'd'));
  await assert.rejects(unpack(s.zip, s.target, { jobs: 0 }), (e: Error) => e instanceof UnsafePathError && /'d' is a symlink in the target/.test(e.message));
  await assert.rejects(unpack(s.zip, s.target, { jobs: 0, force: true }), UnsafePathError);
  assert.deepEqual(listTree(s.outside), ['inner/', 'inner/target/', 'inner/target/d@']);

  // The file itself is a symlink to a file outside: refused; with --force the link is replaced, not followed.
  const t = setup([file('f', 'new')]);
  fs.mkdirSync(t.target, { recursive: true });
  fs.writeFileSync(join(t.outside, 'victim'), 'original');
  fs.symlinkSync(join(t.outside, 'victim'), join(t.target, 'f'));
  await assert.rejects(unpack(t.zip, t.target, { jobs: 0 }), (e: Error) => e instanceof TargetError && /would overwrite existing files: f/.test(e.message));
  await unpack(t.zip, t.target, { jobs: 0, force: true });
  assert.equal(fs.readFileSync(join(t.outside, 'victim'), 'utf8'), 'original');
  assert.equal(fs.lstatSync(join(t.target, 'f')).isFile(), true);
  assert.equal(fs.readFileSync(join(t.target, 'f'), 'utf8'), 'new');
});

test('existing files are kept unless --force; an existing directory is never replaced by a file', async () => {
  const s = setup([file('keep', 'from zip'), file('other', 'x')]);
  fs.mkdirSync(s.target, { recursive: true });
  fs.writeFileSync(join(s.target, 'keep'), 'mine');
  await assert.rejects(unpack(s.zip, s.target, { jobs: 0 }), TargetError);
  assert.deepEqual(listTree(s.target), ['keep']);
  assert.equal(fs.readFileSync(join(s.target, 'keep'), 'utf8'), 'mine');
  await unpack(s.zip, s.target, { jobs: 0, force: true });
  assert.equal(fs.readFileSync(join(s.target, 'keep'), 'utf8'), 'from zip');

  const t = setup([file('d', 'x')]);
  fs.mkdirSync(join(t.target, 'd'), { recursive: true });
  await assert.rejects(unpack(t.zip, t.target, { jobs: 0, force: true }), /would replace an existing directory/);
});

test('the CLI exits 6 with the error code and entry name', () => {
  const s = setup([file('../escape')]);
  const bin = join(import.meta.dirname, '..', '..', 'bin', 'treecast');
  const r = spawnSync(process.execPath, [bin, 'unpack', s.zip, s.target], { encoding: 'utf8' });
  assert.equal(r.status, 6);
  assert.match(r.stderr, /error\[ERR_TREECAST_UNSAFE_PATH\]: archive entry '\.\.\/escape': path climbs out/);
  const j = spawnSync(process.execPath, [bin, 'unpack', s.zip, s.target, '--json'], { encoding: 'utf8' });
  assert.equal(JSON.parse(j.stdout).error.code, 'ERR_TREECAST_UNSAFE_PATH');
  assert.equal(fs.existsSync(s.target), false);
});

test("a zip entry named like unpack's staging folder is refused, so a later unpack's clean-up can never take the user's data for leftovers", async () => {
  for (const name of ['.treecast-unpack-999999999-abcdef/precious', 'a/.treecast-replaced-999999999-abcdef/x']) {
    await refused([{ name, data: 'user data' }], UnsafePathError, /has the name of unpack's own work folders/);
  }
});
