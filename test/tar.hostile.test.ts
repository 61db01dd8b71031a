/**
 * One regression test per hostile-tar case (the node-tar advisories are the checklist): each
 * archive is crafted byte by byte, refused with exit code 6 and a message naming the entry, writes
 * nothing outside DIR, and leaves DIR exactly as it was (DIR already holds a file and a directory
 * the archive must not disturb).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { unpack } from '../src/archive/unpack.js';
import { importArchive } from '../src/archive/import.js';
import { TarJudge } from '../src/archive/tar-walk.js';
import { foldName } from '../src/archive/entry-rules.js';
import { T } from '../src/archive/tar-format.js';
import type { TarHeader } from '../src/archive/tar-parser.js';
import { LocalStore } from '../src/store/local.js';
import { ExitCode } from '../src/errors.js';
import { craftTar, tarEntry, type TarCraftEntry } from './helpers/tar-craft.js';
import { listTree, scratchDir } from './helpers/zip-craft.js';

const BIN = new URL('../../bin/treecast', import.meta.url).pathname;

interface Setup {
  archive: string;
  target: string;
  outside: string;
  before: string[];
}

function setup(bytes: Buffer, name = 'a.tar'): Setup {
  const dir = scratchDir('tc-tar-hostile');
  const archive = join(dir, name);
  fs.writeFileSync(archive, bytes);
  // DIR lies two levels down so '../x' and '../../x' would land in `outside`, which must stay as it is.
  const outside = join(dir, 'outside');
  const target = join(outside, 'inner', 'target');
  fs.mkdirSync(join(target, 'mine'), { recursive: true });
  fs.writeFileSync(join(target, 'mine', 'notes.txt'), 'the user owns this');
  return { archive, target, outside, before: listTree(target) };
}

/** Unpacks and expects a refusal (exit 6) naming `msg`; checks DIR is as it was and nothing lies outside it. */
async function refused(bytes: Buffer | TarCraftEntry[], msg: RegExp, opts: { maxRatio?: number; maxSize?: number; stripComponents?: number; name?: string; jobs?: number; safeLinks?: boolean } = {}): Promise<Setup> {
  const s = setup(Buffer.isBuffer(bytes) ? bytes : craftTar(bytes), opts.name);
  await assert.rejects(unpack(s.archive, s.target, { jobs: opts.jobs ?? 0, ...opts }), (err: Error & { exitCode?: number }) => {
    assert.equal(err.exitCode, ExitCode.unsafeInput, `exit code 6 expected, got ${err.exitCode}: ${err.message}`);
    assert.match(err.message, msg);
    return true;
  });
  assertUntouched(s);
  return s;
}

function assertUntouched(s: Setup): void {
  assert.deepEqual(listTree(s.target), s.before, 'DIR is as it was (no entry, no staging directory left)');
  assert.equal(fs.readFileSync(join(s.target, 'mine', 'notes.txt'), 'utf8'), 'the user owns this');
  assert.deepEqual(listTree(s.outside), ['inner/', 'inner/target/', 'inner/target/mine/', 'inner/target/mine/notes.txt'], 'nothing written outside DIR');
  assert.ok(!fs.existsSync('/tmp/evil-treecast-tar'), 'nothing written to an absolute path');
}

const file = (name: string, data = 'x'): TarCraftEntry => ({ name, data });
const esc = (s: string) => s.replace(/[\\.*+?^$()[\]{}|/]/g, '\\$&');

test('absolute names, .. components, and names absolute after repeated slashes or a drive letter are refused (CVE-2021-32804)', async () => {
  for (const name of ['/tmp/evil-treecast-tar', '////tmp/evil-treecast-tar', '../x', 'a/../../x', 'C:\\x', 'C:x', 'c:../x', '..\\x']) {
    await refused([file('ok.txt'), file(name)], new RegExp(`archive entry '${esc(name)}': `));
  }
  // After --strip-components: 'x/../evil' becomes '../evil'.
  await refused([file('pkg/ok'), file('pkg/../../evil')], /'pkg\/\.\.\/\.\.\/evil': path climbs out/, { stripComponents: 1 });
});

test('a symlink, then a file or directory written through it, is refused (CVE-2021-32803, CVE-2021-37701)', async () => {
  await refused([{ name: 'sub/', type: '5' }, { name: 'd', type: '2', linkname: 'sub' }, file('d/evil')], /'d\/evil': lies under 'd', which is a symlink/);
  await refused([{ name: 'sub/', type: '5' }, { name: 'd', type: '2', linkname: 'sub' }, { name: 'd/x/', type: '5' }], /'d\/x\/': lies under 'd', which is a symlink/);
  await refused([{ name: 'd', type: '2', linkname: '/tmp' }, file('d/evil-treecast-tar')], /'d\/evil-treecast-tar': lies under 'd', which is a symlink/);
  await refused([{ name: 'd', type: '2', linkname: '/tmp' }, file('d/evil-treecast-tar')], /'d': symlink target '\/tmp' is absolute/, { safeLinks: true });
  await refused([{ name: 'd/', type: '5' }, { name: 'd', type: '2', linkname: '.' }, file('d/evil')], /'d': duplicate entry \(dir and symlink\)/);
  // A link name with backslashes (a Windows path through which a later entry would climb).
  await refused([{ name: 'd', type: '2', linkname: '..\\..\\..\\tmp' }, file('d\\evil')], /'d': symlink target '\.\.\\\.\.\\\.\.\\tmp' uses Windows path syntax/, { safeLinks: true });
  await refused([{ name: 'd', type: '2', linkname: '..\\..\\..\\tmp' }, file('d\\evil')], /'d\\evil': name contains '\\'/);
});

test('hardlinks to a target outside DIR, absolute, not earlier in the archive, or naming a symlink are refused', async () => {
  await refused([file('a'), { name: 'h', type: '1', linkname: '../../../etc/passwd' }], /'h': hardlink target '\.\.\/\.\.\/\.\.\/etc\/passwd' is not a safe path/);
  await refused([file('a'), { name: 'h', type: '1', linkname: '/etc/passwd' }], /'h': hardlink target '\/etc\/passwd' is absolute/);
  await refused([{ name: 'h', type: '1', linkname: 'later' }, file('later')], /'h': hardlink target 'later' is not an earlier file of this archive/);
  await refused([{ name: 's', type: '2', linkname: 'a' }, file('a'), { name: 'h', type: '1', linkname: 's' }], /'h': hardlink target 's' is a symlink/);
  await refused([{ name: 'd/', type: '5' }, { name: 'h', type: '1', linkname: 'd' }], /'h': hardlink target 'd' is a dir, not a file/);
});

function header(name: string, typeflag: number = T.FILE): TarHeader {
  return { name, linkname: typeflag === T.SYMLINK ? 'target' : '', typeflag, mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 0, sparse: false, offset: 0 };
}

test('names that collide after case folding or Unicode normalization are refused where the filesystem folds them (CVE-2021-37712, planner)', () => {
  // No folding filesystem on the test machine: the judge is given the folding rule unpack uses
  // when its probe finds one.
  const folding = () => new TarJudge({ fold: foldName });
  let j = folding();
  j.judge(header('A', T.SYMLINK));
  assert.throws(() => j.judge(header('a/evil')), /'a\/evil': lies under 'a', which is a symlink/);
  j = folding();
  j.judge(header('caf\u00e9'));
  assert.throws(() => j.judge(header('cafe\u0301')), /'cafe\u0301': duplicate entry \(file and file\)/);
  j = folding();
  j.judge(header('Makefile'));
  assert.throws(() => j.judge(header('makefile')), /duplicate entry/);
  // Without folding (ext4, tmpfs), those are different names and all accepted.
  const plain = new TarJudge({});
  for (const n of ['A', 'caf\u00e9', 'cafe\u0301', 'Makefile', 'makefile']) plain.judge(header(n, n === 'A' ? T.SYMLINK : T.FILE));
  plain.judge(header('a/ok'));
});

test('deep nesting, pax path overrides with .., GNU long names past any path, and huge pax headers are refused', async () => {
  await refused([{ name: 'x', data: 'x', gnuLongName: `${'a/'.repeat(1030)}x` }], /nests deeper than 1024 levels/); // CVE-2024-28863
  await refused([{ name: 'x', data: 'x', pax: { path: `${'a/'.repeat(1030)}x` } }], /nests deeper than 1024 levels/);
  await refused([file('ok'), { name: 'innocent', data: 'x', pax: { path: '../../evil' } }], /'\.\.\/\.\.\/evil': path climbs out/);
  await refused([file('ok'), { name: 'innocent', data: 'x', gnuLongName: 'n/'.repeat(3000) }], /GNU long name at offset \d+ is 6001 bytes, more than the 4097 bytes/);
  // A pax header that says it is 3 GiB: refused from its header, before anything is read or allocated.
  const huge = Buffer.concat([tarEntry({ name: 'PaxHeaders/x', type: 'x', size: 3 * 2 ** 30 }).subarray(0, 512), Buffer.alloc(4096)]);
  await refused(huge, /pax extended header at offset 0 is 3221225472 bytes, more than the 1048576 bytes/);
});

test('truncated archives, a bad header checksum and a size running past the end are refused', async () => {
  const whole = craftTar([file('a', 'hello'), file('b', 'y'.repeat(3000))]);
  await refused(whole.subarray(0, 512 + 512 + 512 + 1000), /archive is truncated: entry 'b' ends early/);
  await refused(whole.subarray(0, 512 + 512 + 300), /archive is truncated/);
  await refused(craftTar([file('a')], { end: false }), /archive is truncated: no end-of-archive marker after 1 entries/);
  await refused(craftTar([file('a'), { name: 'b', data: 'x', checksumDelta: 1 }]), /header at offset 1024: header checksum mismatch/);
  await refused(Buffer.concat([tarEntry({ name: 'a', data: 'abc', size: 1 << 20 }), Buffer.alloc(1024)]), /archive is truncated: entry 'a' ends early/);
});

test('a pax size over 8 GiB whose data is not there is refused as truncated, writing nothing', async () => {
  const bytes = Buffer.concat([tarEntry({ name: 'big', data: 'only this', size: 0, pax: { size: String(9 * 2 ** 30) } }).subarray(0, 512 * 3), Buffer.alloc(4096)]);
  await refused(bytes, /archive is truncated: entry 'big' ends early/);
  // The same through the GNU base-256 size field.
  const b256 = Buffer.alloc(12);
  b256[0] = 0x80;
  b256.writeUIntBE(9 * 2 ** 30, 6, 6);
  await refused(Buffer.concat([tarEntry({ name: 'big2', data: 'x', sizeField: b256 }).subarray(0, 1024), Buffer.alloc(1024)]), /archive is truncated: entry 'big2' ends early/);
});

test('gzip and zstd streams that decompress past --max-size or --max-ratio are refused', async () => {
  const bomb = craftTar([file('ok'), { name: 'zeros', data: Buffer.alloc(16 << 20) }]);
  const gz = zlib.gzipSync(bomb, { level: 9 });
  await refused(gz, /decompresses to more than 1000 times its size/, { name: 'a.tar.gz' });
  await refused(gz, /'zeros': total size 16777217 bytes exceeds --max-size 1048576/, { maxSize: 1 << 20, maxRatio: 1e9, name: 'b.tar.gz' });
  const zst = spawnSync('zstd', ['-19', '-c', '-q'], { input: bomb, maxBuffer: 64 << 20 }).stdout;
  assert.ok(zst.length > 0 && zst.length < 16 << 10, 'zstd made a small bomb');
  await refused(zst, /decompresses to more than 50 times its size/, { maxRatio: 50, name: 'a.tar.zst' });
  await refused(zst, /'zeros': total size 16777217 bytes exceeds --max-size 65536/, { maxSize: 65536, maxRatio: 1e9, name: 'b.tar.zst' });
  // Corrupt compressed data is refused too.
  const cut = Buffer.from(zst.subarray(0, zst.length - 8));
  await refused(cut, /zstd data is corrupt|archive is truncated/, { name: 'c.tar.zst', maxRatio: 1e9 });
  const gzBad = Buffer.from(gz);
  gzBad[gzBad.length - 12] ^= 0xff;
  await refused(gzBad, /gzip data is corrupt|archive is truncated/, { name: 'c.tar.gz', maxRatio: 1e9 });
});

test('a refusal after files were written (in worker threads) leaves DIR as it was', async () => {
  const entries: TarCraftEntry[] = [];
  for (let i = 0; i < 3000; i++) entries.push(file(`d${i % 7}/f${i}`, `content ${i}`.repeat(200)));
  entries.push(file('../late-evil'));
  await refused(entries, /'\.\.\/late-evil': path climbs out/, { jobs: 2 });
});

test('import refuses what unpack refuses and records no tree or ref', async () => {
  const s = setup(craftTar([file('a'), { name: 'l', type: '2', linkname: '/etc' }]));
  const store = LocalStore.open(join(s.outside, '..', 'store'));
  await assert.rejects(importArchive(s.archive, store, { jobs: 0, ref: 'x', safeLinks: true }), /'l': symlink target '\/etc' is absolute/);
  assert.equal(store.readRef?.('x') ?? undefined, undefined);
});

test('the CLI exits 6 for a hostile tar on stdin, naming the entry', () => {
  const s = setup(Buffer.alloc(0));
  const r = spawnSync(process.execPath, [BIN, 'unpack', '-', s.target, '--json'], { input: craftTar([file('ok'), file('/tmp/evil-treecast-tar')]), encoding: 'utf8' });
  assert.equal(r.status, 6, r.stderr);
  assert.match(r.stdout, /"code":\s*"ERR_TREECAST_UNSAFE_PATH"/);
  assert.match(r.stdout, /archive entry '\/tmp\/evil-treecast-tar': absolute path/);
  assertUntouched(s);
});

test('devices and FIFOs are skipped with a warning, and refused with --strict', async () => {
  const bytes = craftTar([file('a'), { name: 'fifo', type: '6' }, { name: 'null', type: '3' }]);
  const s = setup(bytes);
  const warnings: string[] = [];
  await unpack(s.archive, s.target, { jobs: 0, onWarning: (c, m) => warnings.push(`${c} ${m}`) });
  assert.deepEqual(warnings, ["ARCHIVE_SPECIAL_SKIPPED skipped archive entry 'fifo': is a FIFO", "ARCHIVE_SPECIAL_SKIPPED skipped archive entry 'null': is a character device"]);
  assert.deepEqual(listTree(s.target), ['a', ...s.before].sort());
  const s2 = setup(bytes);
  await assert.rejects(unpack(s2.archive, s2.target, { jobs: 0, strict: true }), (e: Error & { exitCode?: number }) => e.exitCode === 6 && /'fifo': is a FIFO; refused with --strict/.test(e.message));
  assertUntouched(s2);
});

test('SIGINT while reading a stalled stream exits 130, leaves DIR as it was, and the same command then succeeds', async () => {
  const entries: TarCraftEntry[] = [];
  for (let i = 0; i < 200; i++) entries.push(file(`dir/f${i}`, `data ${i}`));
  const bytes = craftTar(entries);
  const s = setup(Buffer.alloc(0));
  const child = spawn(process.execPath, [BIN, 'unpack', '-', s.target, '--jobs', '1'], { stdio: ['pipe', 'ignore', 'pipe'] });
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  child.stdin.write(bytes.subarray(0, bytes.length / 2));
  // Wait until the first half is in the staging directory, then interrupt while the input stalls.
  const deadline = Date.now() + 10_000;
  while (!fs.readdirSync(s.target).some((n) => n.startsWith('.treecast-unpack-')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 200));
  child.kill('SIGINT');
  assert.equal(await exited, 130);
  child.stdin.destroy();
  assertUntouched(s);
  const again = spawnSync(process.execPath, [BIN, 'unpack', '-', s.target, '--jobs', '1'], { input: bytes });
  assert.equal(again.status, 0, again.stderr.toString());
  assert.equal(fs.readdirSync(join(s.target, 'dir')).length, 200);
});

test('a staging directory left by a killed unpack is removed by the next one', async () => {
  const s = setup(craftTar([file('a', 'fresh')]));
  // Named and made as an unpack makes one (mkdtemp: six random characters, mode 0700), its pid gone.
  const stale = fs.mkdtempSync(join(s.target, '.treecast-unpack-999999999-'));
  fs.mkdirSync(join(stale, 'half'), { recursive: true });
  fs.writeFileSync(join(stale, 'half', 'written'), 'x');
  await unpack(s.archive, s.target, { jobs: 0 });
  assert.deepEqual(listTree(s.target), ['a', ...s.before].sort());
});

test("an archive entry named like unpack's staging or set-aside folders is refused (at any depth), so no later unpack removes it as a killed unpack's leftovers", async () => {
  for (const name of ['.treecast-unpack-999999999-abcdef/', 'sub/.treecast-unpack-999999999-abcdef/', '.treecast-replaced-999999999-abcdef/', '.treecast-new-1-2-3']) {
    const dirName = name.endsWith('/') ? name : `${name}/`;
    const entries: TarCraftEntry[] = name.endsWith('/')
      ? [{ name: dirName, type: '5', mode: 0o700 }, file(`${dirName}precious`, 'user data')]
      : [file(name, 'user data')];
    await refused(entries, /has the name of unpack's own work folders/);
  }
  // The same archive's own names otherwise unpack, and a later unpack leaves what the first made.
  const s = setup(craftTar([{ name: 'data/', type: '5', mode: 0o700 }, file('data/precious', 'user data')]));
  await unpack(s.archive, s.target, { jobs: 0 });
  await unpack(s.archive, join(s.target, 'data', 'more'), { jobs: 0 });
  assert.equal(fs.readFileSync(join(s.target, 'data', 'precious'), 'utf8'), 'user data');
});
