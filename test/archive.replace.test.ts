/**
 * `unpack --force` never loses a file the target already held: a failure, an interruption
 * (SIGINT/SIGTERM) or a kill before the end leaves every existing file as it was (a kill may leave
 * a `.treecast-new-*` file beside it), and only a complete extraction replaces them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { unpack } from '../src/archive/unpack.js';
import { pack } from '../src/archive/pack.js';
import { InterruptedError } from '../src/errors.js';
import { craftZip, listTree, scratchDir } from './helpers/zip-craft.js';

const bin = join(import.meta.dirname, '..', '..', 'bin', 'treecast');

/** A target holding the user's versions of `names` (and one file the archive lacks). */
function userTarget(dir: string, names: string[]): Map<string, string> {
  const target = join(dir, 'target');
  const mine = new Map<string, string>();
  for (const n of [...names, 'untouched']) {
    fs.mkdirSync(join(target, n, '..'), { recursive: true });
    fs.writeFileSync(join(target, n), `mine: ${n}`);
    mine.set(n, `mine: ${n}`);
  }
  return mine;
}

function assertUserFilesIntact(target: string, mine: Map<string, string>): void {
  for (const [n, text] of mine) assert.equal(fs.readFileSync(join(target, n), 'utf8'), text, `${n} is the user's version`);
}

test('a CRC failure after an earlier entry was extracted leaves both existing files as they were (exit 6)', () => {
  const dir = scratchDir('tc-replace');
  const zip = join(dir, 'a.zip');
  // 'b' has a wrong CRC in both headers, so only extraction finds it, after 'a' was written.
  fs.writeFileSync(zip, craftZip([{ name: 'a', data: 'archive a' }, { name: 'sub/b', data: 'archive b', crc: 0x1234, localCrc: 0x1234 }]));
  const mine = userTarget(dir, ['a', 'sub/b']);
  const target = join(dir, 'target');
  for (const jobs of ['1', '2']) {
    const r = spawnSync(process.execPath, [bin, 'unpack', zip, target, '--force', '--jobs', jobs], { encoding: 'utf8' });
    assert.equal(r.status, 6, r.stderr);
    assert.match(r.stderr, /CRC/);
    assertUserFilesIntact(target, mine);
    assert.deepEqual(listTree(target), ['a', 'sub/', 'sub/b', 'untouched'], 'no staged file left behind');
  }
  // With --keep-partial the entry before the bad one is kept, so it replaces the user's 'a'; 'b' stays.
  const r = spawnSync(process.execPath, [bin, 'unpack', zip, target, '--force', '--keep-partial'], { encoding: 'utf8' });
  assert.equal(r.status, 6, r.stderr);
  assert.equal(fs.readFileSync(join(target, 'a'), 'utf8'), 'archive a');
  assert.equal(fs.readFileSync(join(target, 'sub/b'), 'utf8'), 'mine: sub/b');
  assert.deepEqual(listTree(target), ['a', 'sub/', 'sub/b', 'untouched']);
});

test('a complete unpack --force replaces files and symlinks, without following links', () => {
  const dir = scratchDir('tc-replace');
  const zip = join(dir, 'a.zip');
  fs.writeFileSync(zip, craftZip([{ name: 'a', data: 'archive a' }, { name: 'l', data: 'a', mode: 0o120777 }, { name: 'f', data: 'archive f' }]));
  const target = join(dir, 'target');
  fs.mkdirSync(target);
  fs.writeFileSync(join(dir, 'victim'), 'outside');
  fs.writeFileSync(join(target, 'a'), 'mine');
  fs.writeFileSync(join(target, 'l'), 'a file where the archive has a link');
  fs.symlinkSync(join(dir, 'victim'), join(target, 'f'));
  const r = spawnSync(process.execPath, [bin, 'unpack', zip, target, '--force'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(fs.readFileSync(join(target, 'a'), 'utf8'), 'archive a');
  assert.equal(fs.readlinkSync(join(target, 'l')), 'a');
  assert.ok(fs.lstatSync(join(target, 'f')).isFile());
  assert.equal(fs.readFileSync(join(target, 'f'), 'utf8'), 'archive f');
  assert.equal(fs.readFileSync(join(dir, 'victim'), 'utf8'), 'outside');
  assert.deepEqual(listTree(target), ['a', 'f', 'l@']);
});

test('an unpack --force aborted after its first batch leaves every existing file as it was', async () => {
  const dir = scratchDir('tc-replace');
  const src = join(dir, 'src');
  const names: string[] = [];
  for (let i = 0; i < 1200; i++) names.push(`d${i % 7}/f${i}`);
  for (const n of names) {
    fs.mkdirSync(join(src, n, '..'), { recursive: true });
    fs.writeFileSync(join(src, n), `archive ${n}`);
  }
  const zip = join(dir, 'a.zip');
  await pack({ dir: src }, zip, { level: 'fast', jobs: 1 });
  const mine = userTarget(dir, names);
  const target = join(dir, 'target');
  const ac = new AbortController();
  let batches = 0;
  await assert.rejects(
    unpack(zip, target, { jobs: 1, force: true, signal: ac.signal, onProgress: () => { if (++batches === 1) ac.abort(); } }),
    InterruptedError,
  );
  assert.ok(batches >= 1);
  assertUserFilesIntact(target, mine);
  assert.equal(listTree(target).filter((p) => p.includes('.treecast-new-')).length, 0, 'staged files removed');
  // The same command run again completes.
  await unpack(zip, target, { jobs: 1, force: true });
  for (const n of names) assert.equal(fs.readFileSync(join(target, n), 'utf8'), `archive ${n}`);
  assert.equal(fs.readFileSync(join(target, 'untouched'), 'utf8'), 'mine: untouched');
});

/** Spawns `unpack --force` of an archive with a large (streamed) entry and signals it once it is writing. */
async function signalledWhileWriting(signal: NodeJS.Signals): Promise<{ code: number | null; sig: NodeJS.Signals | null; target: string; mine: Map<string, string>; stderr: string }> {
  const dir = scratchDir('tc-replace');
  const src = join(dir, 'src');
  fs.mkdirSync(src);
  fs.writeFileSync(join(src, 'a'), 'archive a');
  // Above the 64 MiB streaming threshold: written by the main thread, which takes long enough to be signalled.
  fs.writeFileSync(join(src, 'big'), randomBytes(72 << 20));
  const zip = join(dir, 'a.zip');
  await pack({ dir: src }, zip, { level: 'store', jobs: 1 });
  fs.rmSync(src, { recursive: true });
  const mine = userTarget(dir, ['a', 'big']);
  const target = join(dir, 'target');
  // TMPDIR: the target lock a killed unpack leaves behind stays in this test's folder.
  const child = spawn(process.execPath, [bin, 'unpack', zip, target, '--force', '--jobs', '1'], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TMPDIR: dir } });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((res) => child.on('exit', (c, s) => res([c, s])));
  // Signal as soon as the staged copy of 'big' has started to fill.
  for (;;) {
    const staged = fs.readdirSync(target).find((n) => n.startsWith('.treecast-new-'));
    if (staged && (fs.statSync(join(target, staged), { throwIfNoEntry: false })?.size ?? 0) > 0) break;
    if (child.exitCode !== null) assert.fail(`unpack ended before it was signalled: ${stderr}`);
    await new Promise((r) => setTimeout(r, 2));
  }
  child.kill(signal);
  const [code, sig] = await exited;
  return { code, sig, target, mine, stderr };
}

test('SIGINT and SIGTERM while extracting: exit 130, existing files as they were, nothing staged left', async () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    const r = await signalledWhileWriting(signal);
    assert.equal(r.code, 130, r.stderr);
    assertUserFilesIntact(r.target, r.mine);
    assert.deepEqual(listTree(r.target), ['a', 'big', 'untouched']);
  }
});

test('SIGKILL while extracting leaves every existing file as it was, and only clearly named staged files', async () => {
  const r = await signalledWhileWriting('SIGKILL');
  assert.equal(r.sig, 'SIGKILL');
  assertUserFilesIntact(r.target, r.mine);
  const extra = listTree(r.target).filter((p) => !['a', 'big', 'untouched'].includes(p));
  assert.ok(extra.length > 0 && extra.every((p) => /^\.treecast-new-\d+-[0-9a-f]{8}-\d+$/.test(p)), extra.join(', '));
});
