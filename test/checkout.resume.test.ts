/**
 * A checkout killed (SIGKILL) while writing a file, then run again: the file it was writing is a
 * prefix of its blob and is finished; a file the user changed after the kill (other bytes, bytes
 * added) still stops the run, untouched. Real processes: the CLI killed half way through a
 * large file's copy, and `treecast serve` for the remote paths.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { LocalStore } from '../src/store/local.js';
import { digestOf } from '../src/core/digest.js';
import { describeTree, tempDir, writeTree } from './helpers/tmp.js';
import { runCli, servedUrl, startCli, waitExit } from './helpers/remote.js';

/** Large enough that a copy of it is seen half written: ~0.1-0.3 s of copy_file_range here. */
const BIG = 256 << 20;

type Child = ReturnType<typeof startCli>;
const children: Child[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

function start(args: string[], env: NodeJS.ProcessEnv = {}): Child {
  const c = startCli(args, env);
  children.push(c);
  return c;
}

/** Distinct bytes at every MiB (a random MiB, its index stamped in), so no part repeats another. */
function bigBytes(): Buffer {
  const chunk = randomBytes(1 << 20);
  const out = Buffer.allocUnsafe(BIG);
  for (let at = 0; at < BIG; at += chunk.length) {
    chunk.writeUInt32LE(at >>> 20, 0);
    chunk.copy(out, at);
  }
  return out;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A tree with small files before and after one large file (checked out in that order), an executable, a symlink, an empty file and an empty directory. */
function sourceTree(root: string): Buffer {
  const big = bigBytes();
  writeTree(root, {
    'a1.txt': 'first small file\n',
    'a2.txt': 'second small file\n',
    'big.bin': { bytes: big },
    'run.sh': { text: '#!/bin/sh\necho run\n', exec: true },
    'z1.txt': 'after the big one\n',
    'empty': '',
    'link': { link: 'a1.txt' },
    'later/deep/f.txt': 'deep file\n',
    'hollow': { dir: true },
  });
  return big;
}

/**
 * `checkout ROOT out` (copy, one thread) killed with SIGKILL once big.bin exists and is shorter
 * than its blob. Tries again in a new target when the kill lands before or after the copy.
 * Returns the target and how many bytes of big.bin were written.
 */
async function killedMidWrite(dir: string, store: string, big: Buffer): Promise<{ out: string; written: number }> {
  for (let attempt = 0; attempt < 8; attempt++) {
    const out = join(dir, `out${attempt}`);
    const file = join(out, 'big.bin');
    const child = start(['checkout', 'tree', out, '--store', store, '--method', 'copy', '--jobs', '1']);
    const deadline = Date.now() + 60_000;
    // A tight synchronous poll: the copy of BIG takes a fraction of a second.
    for (;;) {
      const st = fs.statSync(file, { throwIfNoEntry: false });
      if (st && st.size > 0 && st.size < BIG) {
        child.kill('SIGKILL');
        break;
      }
      if (st && st.size >= BIG) break; // missed: the copy is done
      if (child.exitCode !== null || Date.now() > deadline) break;
      if (!st) await new Promise((r) => setTimeout(r, 1));
    }
    const r = await waitExit(child);
    const st = fs.statSync(file, { throwIfNoEntry: false });
    if (r.signal !== 'SIGKILL' || !st || st.size === 0 || st.size >= BIG) continue;
    // The proof that the file really is what a stopped write leaves: a strict, non-empty prefix.
    const got = fs.readFileSync(file);
    assert.ok(got.length > 0 && got.length < BIG, `big.bin is ${got.length} of ${BIG} bytes`);
    assert.ok(got.equals(big.subarray(0, got.length)), 'big.bin holds exactly the first bytes of its blob');
    // A large copy (copyFileSync) creates the file with the blob's mode and sets the tree's after the bytes.
    assert.equal(fs.statSync(file).mode & 0o777, 0o444, 'its mode is not yet set');
    return { out, written: got.length };
  }
  throw new Error('no attempt killed the checkout while big.bin was half written');
}

async function prepared() {
  const dir = tempDir('tc-resume');
  const store = join(dir, 's');
  const big = sourceTree(join(dir, 'src'));
  const snap = await runCli(['snapshot', join(dir, 'src'), '--store', store, '--ref', 'tree']);
  assert.equal(snap.code, 0, snap.stderr);
  return { dir, store, big };
}

test('a first checkout killed while writing a large file: the same command again finishes it; a file changed after the kill stops it and is kept', async () => {
  const { dir, store, big } = await prepared();
  const { out, written } = await killedMidWrite(dir, store, big);
  const file = join(out, 'big.bin');
  assert.ok(fs.existsSync(join(out, 'a2.txt')) && !fs.existsSync(join(out, 'z1.txt')), 'killed after the files before big.bin, before those after it');

  // status names the unfinished checkout and the command that finishes it, with no --force.
  const st = await runCli(['status', out, '--store', store]);
  assert.equal(st.code, 7, st.stderr);
  assert.match(st.stderr, /did not finish/);
  assert.match(st.stderr, /run the checkout again to finish it/);
  assert.doesNotMatch(st.stderr, /--force/);

  // A byte the user changed in the half-written file: no prefix of the blob; the run stops, and
  // neither that file nor any other is touched.
  const fd = fs.openSync(file, 'r+');
  const mid = Math.floor(written / 2);
  const was = Buffer.alloc(1);
  fs.readSync(fd, was, 0, 1, mid);
  fs.writeSync(fd, Buffer.from([was[0]! ^ 0xff]), 0, 1, mid);
  fs.closeSync(fd);
  const changed = sha(fs.readFileSync(file));
  const before = describeTree(out);
  let again = await runCli(['checkout', 'tree', out, '--store', store]);
  assert.equal(again.code, 4, again.stderr);
  assert.match(again.stderr, /big\.bin/);
  assert.equal(sha(fs.readFileSync(file)), changed, 'the changed file is untouched');
  assert.deepEqual(describeTree(out), before, 'nothing in the target was touched');

  // The byte put back, and bytes of the user's added at the end: still no prefix, still stopped.
  // So is a finished file the user added to (longer than its blob).
  const fd2 = fs.openSync(file, 'r+');
  fs.writeSync(fd2, was, 0, 1, mid);
  fs.closeSync(fd2);
  fs.appendFileSync(file, 'USER LINE\n');
  fs.appendFileSync(join(out, 'a2.txt'), 'my note\n');
  const appended = sha(fs.readFileSync(file));
  again = await runCli(['checkout', 'tree', out, '--store', store, '--json']);
  assert.equal(again.code, 4, again.stderr);
  assert.deepEqual(((JSON.parse(again.stdout) as { error: { paths: string[] } }).error.paths).sort(), ['a2.txt', 'big.bin']);
  assert.equal(sha(fs.readFileSync(file)), appended);
  assert.equal(fs.readFileSync(join(out, 'a2.txt'), 'utf8'), 'second small file\nmy note\n');

  // Back to what the kill left, and a finished file emptied (an empty file is a prefix of any
  // blob, as a file created but not yet written is): the plain command finishes the tree.
  fs.truncateSync(file, written);
  fs.writeFileSync(join(out, 'a2.txt'), 'second small file\n');
  fs.truncateSync(join(out, 'a1.txt'), 0);
  again = await runCli(['checkout', 'tree', out, '--store', store]);
  assert.equal(again.code, 0, again.stderr);
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')));
  const clean = await runCli(['status', out, '--store', store, '--json']);
  assert.equal(clean.code, 0, clean.stderr);
  const shown = JSON.parse(clean.stdout) as { modified: string[]; added: string[]; removed: string[] };
  assert.deepEqual([shown.modified, shown.added, shown.removed], [[], [], []]);
});

test('a copy checkout killed mid-write is finished by the same checkout with --method hardlink: the half-written file becomes the store\'s inode', async () => {
  const { dir, store, big } = await prepared();
  const { out } = await killedMidWrite(dir, store, big);
  // Another tree than the stopped one does not take the prefix for a write of its own: a local change.
  fs.cpSync(join(dir, 'src'), join(dir, 'src2'), { recursive: true, verbatimSymlinks: true });
  fs.writeFileSync(join(dir, 'src2', 'a1.txt'), 'another first file\n');
  assert.equal((await runCli(['snapshot', join(dir, 'src2'), '--store', store, '--ref', 'tree2'])).code, 0);
  const other = await runCli(['checkout', 'tree2', out, '--store', store, '--json']);
  assert.equal(other.code, 4, other.stderr);
  assert.deepEqual((JSON.parse(other.stdout) as { error: { paths: string[] } }).error.paths.sort(), ['a1.txt', 'big.bin']);
  const again = await runCli(['checkout', 'tree', out, '--store', store, '--method', 'hardlink']);
  assert.equal(again.code, 0, again.stderr);
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')));
  const blob = LocalStore.open(store).blobPath(digestOf(big).hash);
  assert.equal(fs.statSync(join(out, 'big.bin')).ino, fs.statSync(blob).ino, 'big.bin is linked from the store');
});

test('remote: a killed `checkout --remote --direct` and `--remote --method hardlink` wrote files the local store lacks the blobs of; the same command fetches them to prove a prefix and finishes', async () => {
  const dir = tempDir('tc-resume-remote');
  const serverStore = join(dir, 'server');
  const spec: Record<string, string> = {};
  // Three batches of writes at least (256 per batch): the run is paused before the second and killed.
  for (let i = 0; i < 700; i++) spec[`d${i % 7}/f${String(i).padStart(4, '0')}.txt`] = `file ${i} `.repeat(20 + (i % 50));
  writeTree(join(dir, 'src'), spec);
  const snap = await runCli(['snapshot', join(dir, 'src'), '--store', serverStore]);
  assert.equal(snap.code, 0, snap.stderr);
  const root = snap.stdout.trim().split('\n').pop()!;
  const serve = start(['serve', '--listen', '127.0.0.1:0', '--json', '--store', serverStore]);
  const url = await servedUrl(serve);
  try {
    for (const mode of [['--direct'], ['--method', 'hardlink']]) {
      const tag = mode.join('');
      const store = join(dir, `client${tag}`);
      const out = join(dir, `out${tag}`);
      const pause = join(dir, `pause${tag}`);
      const args = ['checkout', root, out, '--remote', url, '--store', store, '--jobs', '1', ...mode];
      const first = start(args, { TREECAST_TEST_PAUSE_FILE: pause });
      const deadline = Date.now() + 60_000;
      while (!fs.existsSync(pause) && first.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.ok(fs.existsSync(pause), `${tag}: the checkout paused half way (${first.out.stderr})`);
      // Paused before its second batch: the first (d0's 100 files, then d1's, ...) may still be writing.
      while (fs.readdirSync(join(out, 'd0')).length < 100 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      first.kill('SIGKILL');
      await waitExit(first);
      fs.rmSync(pause);
      // What a kill inside a file's write leaves, made by hand here (a write of a few KiB is too
      // short to be caught by a kill): the file at its name, a strict prefix of its blob, and no
      // blob in the local store (--direct never stores one; a hardlink checkout links its file into
      // the store only once written).
      const written = fs.readdirSync(join(out, 'd0')).sort();
      assert.ok(written.length > 4, `${tag}: the first batch was written`);
      const local = LocalStore.open(store);
      const cut = [join(out, 'd0', written[0]!), join(out, 'd0', written[1]!)];
      const blobs = cut.map((p) => digestOf(fs.readFileSync(p)));
      cut.forEach((p, i) => {
        if (fs.statSync(p).nlink > 1) {
          // Hardlinked: the stopped write had not yet linked it into the store.
          fs.rmSync(local.blobPath(blobs[i]!.hash));
          fs.rmSync(local.executableBlobPath(blobs[i]!.hash), { force: true });
        }
        fs.chmodSync(p, 0o644);
        fs.truncateSync(p, i === 0 ? Math.floor(blobs[i]!.size / 2) : 0);
      });
      for (const d of blobs) assert.equal(local.hasSync(d), false, `${tag}: the local store lacks the blob`);
      const again = await runCli(args);
      assert.equal(again.code, 0, `${tag}: ${again.stderr}`);
      assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')), tag);
      if (tag === '--direct') for (const d of blobs) assert.equal(local.hasSync(d), false, '--direct kept the blob out of the store');
    }
  } finally {
    serve.kill('SIGTERM');
    await waitExit(serve);
  }
});
