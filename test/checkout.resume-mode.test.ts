/**
 * A checkout killed after a file's bytes were written and before its mode was set (a clone or large
 * copy starts with the blob's read-only 0444; a fetched file of a hardlink checkout is written 0444,
 * or 0555 for an executable) leaves that file whole, read-only. The same checkout run again must
 * give it the mode a fresh checkout gives, and must not chmod a file of the user's that the
 * checkout did not write.
 *
 * The checkout is really killed (SIGKILL, paused half way by TREECAST_TEST_PAUSE_FILE); the window
 * between a file's last byte and its chmod is a few syscalls, too narrow to hit with a kill
 * reliably, so the read-only modes of two files it wrote are then made by hand: exactly the state
 * such a kill leaves (whole bytes, mode 0444 or 0555, changed after the started record's start).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { settle, tempDir, writeTree, type Spec } from './helpers/tmp.js';
import { runCli, startCli, waitExit } from './helpers/remote.js';
import { digestOf } from '../src/core/digest.js';
import { LocalStore } from '../src/store/local.js';

type Child = ReturnType<typeof startCli>;
const children: Child[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

const mode = (p: string) => fs.statSync(p).mode & 0o7777;

/**
 * Runs the checkout `args`, paused before its second batch of writes (TREECAST_TEST_PAUSE_FILE),
 * and kills it (SIGKILL) once its first batch is on disk in `out`.
 */
async function killedAfterFirstBatch(args: string[], pause: string, out: string): Promise<void> {
  const first = startCli(args, { TREECAST_TEST_PAUSE_FILE: pause });
  children.push(first);
  const deadline = Date.now() + 60_000;
  while (!fs.existsSync(pause) && first.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.ok(fs.existsSync(pause), `the checkout paused half way (${first.out.stderr})`);
  while (!fs.existsSync(join(out, 'a255.txt')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  first.kill('SIGKILL');
  assert.equal((await waitExit(first)).signal, 'SIGKILL');
  fs.rmSync(pause);
  assert.ok(!fs.existsSync(join(out, 'a299.txt')), 'killed before the second batch');
}

test('a resumed checkout gives a file the stopped run wrote whole but left read-only its fresh mode, and leaves a read-only file of the user\'s alone', async () => {
  const dir = tempDir('tc-resume-mode');
  const store = join(dir, 's');
  const spec: Spec = { 'a000.sh': { text: '#!/bin/sh\necho a\n', exec: true }, 'u.txt': 'the user had this one\n' };
  // Two batches of writes at least (256 per batch): the run is paused before the second and killed.
  for (let i = 1; i < 300; i++) spec[`a${String(i).padStart(3, '0')}.txt`] = `file ${i}\n`.repeat(1 + (i % 7));
  writeTree(join(dir, 'src'), spec);
  assert.equal((await runCli(['snapshot', join(dir, 'src'), '--store', store, '--ref', 'tree'])).code, 0);

  // What a fresh checkout gives each file (the umask's modes, for a copy).
  const fresh = join(dir, 'fresh');
  assert.equal((await runCli(['checkout', 'tree', fresh, '--store', store, '--method', 'copy'])).code, 0);

  // The user's own copy of u.txt, read-only, there before the checkout starts.
  const out = join(dir, 'out');
  fs.mkdirSync(out);
  fs.writeFileSync(join(out, 'u.txt'), 'the user had this one\n');
  fs.chmodSync(join(out, 'u.txt'), 0o444);
  await settle(200);

  const pause = join(dir, 'pause');
  const args = ['checkout', 'tree', out, '--store', store, '--method', 'copy', '--jobs', '1'];
  await killedAfterFirstBatch(args, pause, out);
  const st = await runCli(['status', out, '--store', store]);
  assert.match(st.stderr, /did not finish/, 'a started record names the stopped checkout');

  // The state a kill between a file's bytes and its mode leaves, for two files the run wrote.
  fs.chmodSync(join(out, 'a000.sh'), 0o555);
  fs.chmodSync(join(out, 'a001.txt'), 0o444);

  const again = await runCli(args);
  assert.equal(again.code, 0, again.stderr);
  for (const name of fs.readdirSync(fresh)) {
    if (name === 'u.txt') continue;
    assert.equal(mode(join(out, name)).toString(8), mode(join(fresh, name)).toString(8), `${name} has a fresh checkout's mode`);
  }
  assert.equal(mode(join(out, 'u.txt')), 0o444, 'the user\'s file, older than the checkout, keeps its mode');
  const clean = await runCli(['status', out, '--store', store, '--json']);
  assert.equal(clean.code, 0, clean.stderr);
  const shown = JSON.parse(clean.stdout) as { modified: string[]; added: string[]; removed: string[] };
  assert.deepEqual([shown.modified, shown.added, shown.removed], [[], [], []]);
});

test('a resumed hardlink checkout makes a file the stopped run wrote whole but never linked the link to the stored blob a fresh one makes, storing the blob when the store lacks it', async () => {
  const dir = tempDir('tc-resume-link');
  const store = join(dir, 's');
  const spec: Spec = { 'a000.sh': { text: '#!/bin/sh\necho linked\n', exec: true }, 'u.txt': 'the user had this one\n' };
  for (let i = 1; i < 300; i++) spec[`a${String(i).padStart(3, '0')}.txt`] = `linked file ${i}\n`.repeat(1 + (i % 7));
  writeTree(join(dir, 'src'), spec);
  assert.equal((await runCli(['snapshot', join(dir, 'src'), '--store', store, '--ref', 'tree'])).code, 0);
  const local = new LocalStore(store);
  const blobOf = (name: string, exec = false) => {
    const hash = digestOf(fs.readFileSync(join(dir, 'src', name))).hash;
    return exec ? local.executableBlobPath(hash) : local.blobPath(hash);
  };

  // What a fresh hardlink checkout makes: every file the store's inode (an executable its twin's).
  const fresh = join(dir, 'fresh');
  assert.equal((await runCli(['checkout', 'tree', fresh, '--store', store, '--method', 'hardlink'])).code, 0);
  const linked = (root: string, name: string) => fs.statSync(join(root, name)).ino === fs.statSync(blobOf(name, name.endsWith('.sh')), { throwIfNoEntry: false })?.ino;
  for (const name of fs.readdirSync(fresh)) assert.ok(linked(fresh, name), `fresh: ${name} is the stored blob`);

  const out = join(dir, 'out');
  fs.mkdirSync(out);
  fs.writeFileSync(join(out, 'u.txt'), 'the user had this one\n');
  fs.chmodSync(join(out, 'u.txt'), 0o444);
  const userIno = fs.statSync(join(out, 'u.txt')).ino;
  await settle(200);

  const pause = join(dir, 'pause');
  const args = ['checkout', 'tree', out, '--store', store, '--method', 'hardlink', '--jobs', '1'];
  await killedAfterFirstBatch(args, pause, out);

  // What `checkout --remote --method hardlink` killed between a fetched file's last byte and its link
  // into the store leaves (write-linked.ts): the file whole, its own inode, 0444 (0555 for an
  // executable); the store without the blob (an executable: the plain blob stored, not the twin).
  const unlinkAsKilled = (name: string, perm: number) => {
    const p = join(out, name);
    const bytes = fs.readFileSync(p);
    fs.unlinkSync(p);
    fs.writeFileSync(p, bytes, { mode: 0o600 });
    fs.chmodSync(p, perm);
  };
  unlinkAsKilled('a000.sh', 0o555);
  fs.unlinkSync(blobOf('a000.sh', true));
  unlinkAsKilled('a001.txt', 0o444);
  fs.unlinkSync(blobOf('a001.txt'));
  assert.ok(!linked(out, 'a001.txt') && !linked(out, 'a000.sh'));

  const again = await runCli(args);
  assert.equal(again.code, 0, again.stderr);
  for (const name of fs.readdirSync(fresh)) {
    if (name === 'u.txt') continue;
    assert.ok(linked(out, name), `${name} is the stored blob's inode, as in a fresh hardlink checkout`);
    assert.equal(mode(join(out, name)).toString(8), mode(join(fresh, name)).toString(8), `${name} has a fresh checkout's mode`);
  }
  assert.equal(fs.statSync(join(out, 'u.txt')).ino, userIno, 'the user\'s file, older than the checkout, is not replaced');
  assert.equal(mode(join(out, 'u.txt')), 0o444, 'and keeps its mode');
  const verified = await runCli(['verify', '--store', store]);
  assert.equal(verified.code, 0, verified.stdout + verified.stderr);
  const clean = await runCli(['status', out, '--store', store, '--json']);
  assert.equal(clean.code, 0, clean.stderr);
  const shown = JSON.parse(clean.stdout) as { modified: string[]; added: string[]; removed: string[] };
  assert.deepEqual([shown.modified, shown.added, shown.removed], [[], [], []]);
});
