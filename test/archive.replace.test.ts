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
import { craftTar } from './helpers/tar-craft.js';

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

// ------------------------------------------------------------ tar: publish sets files aside

test('tar unpack --force of an archive whose top level holds a `.replaced` entry replaces the clashing file and writes that entry', () => {
  const dir = scratchDir('tc-replace');
  const tar = join(dir, 'a.tar');
  fs.writeFileSync(tar, craftTar([{ name: '.replaced/x', data: 'archive x' }, { name: 'a', data: 'archive a' }]));
  const mine = userTarget(dir, ['a']);
  const target = join(dir, 'target');
  const r = spawnSync(process.execPath, [bin, 'unpack', tar, target, '--force'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(fs.readFileSync(join(target, 'a'), 'utf8'), 'archive a');
  assert.equal(fs.readFileSync(join(target, '.replaced', 'x'), 'utf8'), 'archive x');
  assert.equal(fs.readFileSync(join(target, 'untouched'), 'utf8'), mine.get('untouched'));
  assert.deepEqual(listTree(target), ['.replaced/', '.replaced/x', 'a', 'untouched'], 'nothing set aside is left');
});

/** Every file's contents below `root`, wherever it lies. */
function contentsBelow(root: string): string[] {
  return listTree(root).filter((p) => !p.endsWith('/') && !p.endsWith('@')).map((p) => fs.readFileSync(join(root, p), 'utf8'));
}

test('a file tar unpack --force set aside and could not put back is kept where the error says, and a later unpack leaves it there', () => {
  const dir = scratchDir('tc-replace');
  const tar = join(dir, 'a.tar');
  fs.writeFileSync(tar, craftTar([{ name: 'a', data: 'archive a' }, { name: 'b', data: 'archive b' }]));
  const mine = userTarget(dir, ['a', 'b']);
  const target = join(dir, 'target');
  // The second file set aside fails, and so does putting the first one back (as on a failing disk):
  // the user's first file is then only in the folder it was set aside in.
  const inject = join(dir, 'inject.cjs');
  fs.writeFileSync(inject, `
const fs = require('node:fs');
const real = fs.renameSync;
const target = ${JSON.stringify(target)};
let setAside = 0;
fs.renameSync = (from, to) => {
  const f = String(from), t = String(to);
  const eio = () => Object.assign(new Error('EIO: i/o error, rename'), { code: 'EIO' });
  if (f.startsWith(target + '/') && !f.includes('.treecast-') && t.includes('replaced') && ++setAside === 2) throw eio();
  if (f.includes('replaced') && t.startsWith(target + '/') && !t.includes('.treecast-')) throw eio();
  return real(from, to);
};
`);
  const r = spawnSync(process.execPath, ['--require', inject, bin, 'unpack', tar, target, '--force'], { encoding: 'utf8' });
  assert.equal(r.status, 7, r.stderr);
  const kept = /are kept in (\S+)/.exec(r.stderr)?.[1];
  assert.ok(kept !== undefined, r.stderr);
  assert.ok(contentsBelow(kept).some((c) => c === 'mine: a' || c === 'mine: b'), `${kept} holds a file of the user's`);
  // The next unpack into DIR (its process gone, the first run's leftovers are stale) keeps it.
  const other = join(dir, 'other.tar');
  fs.writeFileSync(other, craftTar([{ name: 'c', data: 'archive c' }]));
  const again = spawnSync(process.execPath, [bin, 'unpack', other, target], { encoding: 'utf8' });
  assert.equal(again.status, 0, again.stderr);
  const left = contentsBelow(target);
  for (const n of ['a', 'b']) assert.ok(left.includes(mine.get(n)!), `the user's ${n} is still in ${target}: ${listTree(target).join(', ')}`);
});

test('a folder of the user\'s named like a staging directory of a dead unpack is not removed by the next unpack', () => {
  const dir = scratchDir('tc-replace');
  const tar = join(dir, 'a.tar');
  fs.writeFileSync(tar, craftTar([{ name: 'a', data: 'archive a' }]));
  const target = join(dir, 'target');
  const theirs = join(target, '.treecast-unpack-999999999-thesis');
  fs.mkdirSync(theirs, { recursive: true, mode: 0o755 });
  fs.writeFileSync(join(theirs, 'thesis.txt'), 'mine');
  const r = spawnSync(process.execPath, [bin, 'unpack', tar, target], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(fs.readFileSync(join(theirs, 'thesis.txt'), 'utf8'), 'mine');
});
