/**
 * The target guard shared by checkout and unpack: a target that contains the store or lies inside
 * it is refused before anything changes, and one target is written by one process at a time.
 * Run through the CLI, as separate real processes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { describeTree, tempDir, writeTree } from './helpers/tmp.js';
import { publicBin } from './helpers/public-package.js';
import { startServer } from './helpers/remote.js';

const bin = new URL('../../bin/treecast', import.meta.url).pathname;

function tc(args: string[], store: string, env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [bin, ...args], { env: { ...process.env, TREECAST_STORE: store, ...env }, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** As tc, without blocking this process (a server in it answers meanwhile); `as` runs it as another user. */
function tcAsync(args: string[], env: Record<string, string>, as?: { uid: number; gid: number }): Promise<{ code: number | null; err: string }> {
  const child = spawn(process.execPath, [as ? publicBin() : bin, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'], ...as });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  return new Promise((r) => child.on('close', (code) => r({ code, err })));
}

/** The uid and gid of `nobody` on Debian. */
const NOBODY = { uid: 65534, gid: 65534 };

/**
 * A temp folder of the test's own (TMPDIR for every process it runs), so the private lock folder
 * `treecast-locks-UID` the target locks live in is this test's alone and can be checked empty.
 */
function lockTmp(dir: string): { tmp: string; locks: (uid?: number) => string[] } {
  const tmp = join(dir, 'tmp');
  fs.mkdirSync(tmp);
  fs.chmodSync(tmp, 0o1777);
  return { tmp, locks: (uid = process.getuid!()) => fs.readdirSync(join(tmp, `treecast-locks-${uid}`)) };
}

/** Starts `checkout REF OUT --jobs 1` that pauses, lock held, before its second batch of writes. */
function pausedCheckout(ref: string, out: string, pause: string, env: Record<string, string>, as?: { uid: number; gid: number }) {
  const child = spawn(process.execPath, [as ? publicBin() : bin, 'checkout', ref, out, '--jobs', '1'], {
    env: { ...process.env, TREECAST_TEST_PAUSE_FILE: pause, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
    ...as,
  });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const exit = new Promise<{ code: number | null; err: string }>((r) => child.on('close', (code) => r({ code, err })));
  return { child, exit };
}

function assertBusy(r: { code: number | null; err: string }, pid: number | undefined, what: string): void {
  assert.equal(r.code, 9, `${what}: ${r.err}`);
  assert.match(r.err, /ERR_TREECAST_TARGET_BUSY/, what);
  assert.ok(r.err.includes(`pid ${pid}`), `${what}: ${r.err}`);
}

/** A tree of `n` small files in `root` (more than two batches of writes). */
function manyFiles(root: string, n: number): void {
  const spec: Record<string, string> = {};
  for (let i = 0; i < n; i++) spec[`d${i % 7}/f${i}`] = `file ${i}\n`;
  writeTree(root, spec);
}

async function waitFor(path: string, child: { exitCode: number | null }): Promise<void> {
  for (let i = 0; i < 3000 && !fs.existsSync(path); i++) {
    if (child.exitCode !== null) throw new Error(`the process exited (${child.exitCode}) before pausing`);
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.ok(fs.existsSync(path), 'the checkout reached its pause');
}

test('checkout --force into a directory holding the store is refused (exit 7, both paths named); store, ref and files stay', () => {
  const dir = tempDir();
  const sx = join(dir, 'sx');
  writeTree(join(sx, 'work'), { f: 'hi\n' });
  const store = join(sx, 'store');
  assert.equal(tc(['snapshot', join(sx, 'work'), '--ref', 'w'], store).code, 0);
  const before = describeTree(sx);
  fs.symlinkSync(sx, join(dir, 'alias'));
  fs.mkdirSync(join(dir, 'other'));
  // Spelled directly, through `..`, through a symlink, and as a directory inside the store.
  for (const target of [sx, join(dir, 'other', '..', 'sx'), join(dir, 'alias'), join(dir, 'alias', 'store', 'new', 'deeper'), join(store, 'refs')]) {
    const r = tc(['checkout', 'w', target, '--force'], store);
    assert.equal(r.code, 7, `${target}: ${r.err}`);
    assert.match(r.err, /ERR_TREECAST_TARGET/);
    assert.ok(r.err.includes(fs.realpathSync(store)), r.err);
    assert.ok(r.err.includes(target), r.err);
    assert.match(r.err, /contains the store|inside the store/);
  }
  assert.deepEqual(describeTree(sx), before, 'nothing under the target or in the store changed');
  assert.equal(fs.existsSync(join(store, 'new')), false);
  const ok = tc(['checkout', 'w', join(dir, 'elsewhere')], store);
  assert.equal(ok.code, 0, ok.err);
  assert.equal(fs.readFileSync(join(dir, 'elsewhere', 'f'), 'utf8'), 'hi\n');
});

test('unpack into a directory holding the configured store, or inside it, is refused the same way', () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { a: 'a' });
  const store = join(dir, 'top', 'store');
  const zip = join(dir, 'a.zip');
  assert.equal(tc(['pack', join(dir, 'src'), zip], store).code, 0);
  writeTree(join(dir, 'top'), { 'mine': 'keep' });
  const before = describeTree(join(dir, 'top'));
  for (const target of [join(dir, 'top'), join(store, 'cas')]) {
    const r = tc(['unpack', zip, target, '--force'], store);
    assert.equal(r.code, 7, r.err);
    assert.ok(r.err.includes(join(fs.realpathSync(dir), 'top', 'store')) && r.err.includes(target), r.err);
  }
  assert.deepEqual(describeTree(join(dir, 'top')), before);
});

test('a second checkout into a directory being checked out fails at once naming the first pid (exit 9); the first finishes; no lock is left in the tree', async () => {
  const dir = tempDir();
  manyFiles(join(dir, 'src'), 900);
  writeTree(join(dir, 'other'), { 'x': 'other tree' });
  const store = join(dir, 's');
  const { tmp, locks } = lockTmp(dir);
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 'big'], store).code, 0);
  assert.equal(tc(['snapshot', join(dir, 'other'), '--ref', 'small'], store).code, 0);
  const zip = join(dir, 'other.zip');
  assert.equal(tc(['pack', join(dir, 'other'), zip], store).code, 0);
  const out = join(dir, 'out');
  const pause = join(dir, 'pause');
  const first = spawn(process.execPath, [bin, 'checkout', 'big', out, '--jobs', '1'], {
    env: { ...process.env, TREECAST_STORE: store, TREECAST_TEST_PAUSE_FILE: pause, TMPDIR: tmp },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let firstErr = '';
  first.stderr.on('data', (d) => (firstErr += d));
  const firstExit = new Promise<number | null>((r) => first.on('close', (code) => r(code)));
  try {
    await waitFor(pause, first);
    for (const args of [['checkout', 'small', out, '--force'], ['checkout', 'small', join(dir, 'x', '..', 'out')], ['unpack', zip, out, '--force']]) {
      const second = tc(args, store, { TMPDIR: tmp });
      assert.equal(second.code, 9, `${args.join(' ')}: ${second.err}`);
      assert.match(second.err, /ERR_TREECAST_TARGET_BUSY/);
      assert.ok(second.err.includes(`pid ${first.pid}`), second.err);
    }
    // Another temp dir (a service with a private /tmp) misses the first's target lock; the same
    // store's pin of the target still keeps it out.
    const otherTmp = join(dir, 'other-tmp');
    fs.mkdirSync(otherTmp, { mode: 0o700 });
    const elsewhere = tc(['checkout', 'small', out, '--force'], store, { TMPDIR: otherTmp });
    assert.equal(elsewhere.code, 9, `checkout from the same store with another TMPDIR: ${elsewhere.err}`);
    assert.ok(elsewhere.err.includes(`pid ${first.pid}`), elsewhere.err);
    fs.rmSync(pause);
    assert.equal(await firstExit, 0, firstErr);
  } finally {
    first.kill('SIGKILL');
  }
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')), 'the tree is exactly the first checkout, no lock file in it');
  assert.deepEqual(locks(), [], 'the lock was released');
  assert.deepEqual(fs.readdirSync(join(store, 'locks')), [], 'and so was the pin of its tree');
});

test('a lock left by a killed checkout is stale: a checkout from another store takes it over and finishes the tree; gc clears the dead pin', async () => {
  const dir = tempDir();
  manyFiles(join(dir, 'src'), 900);
  const [storeA, storeB] = [join(dir, 'a'), join(dir, 'b')];
  const { tmp, locks } = lockTmp(dir);
  for (const store of [storeA, storeB]) assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 'big'], store).code, 0);
  const out = join(dir, 'out');
  const first = pausedCheckout('big', out, join(dir, 'pause'), { TREECAST_STORE: storeA, TMPDIR: tmp });
  try {
    await waitFor(join(dir, 'pause'), first.child);
  } finally {
    first.child.kill('SIGKILL');
  }
  await first.exit;
  const left = locks();
  assert.equal(left.length, 1, 'the killed process left its lock behind');
  assert.equal(JSON.parse(fs.readFileSync(join(tmp, `treecast-locks-${process.getuid!()}`, left[0]!), 'utf8')).pid, first.child.pid);
  const again = tc(['checkout', 'big', out], storeB, { TMPDIR: tmp });
  assert.equal(again.code, 0, again.err);
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')));
  assert.deepEqual(locks(), []);
  assert.deepEqual(fs.readdirSync(join(storeB, 'locks')), []);
  // The killed checkout's pin of its tree in its own store: gc sees its pid gone and removes it.
  assert.equal(fs.readdirSync(join(storeA, 'locks')).length, 1);
  assert.equal(tc(['gc'], storeA, { TMPDIR: tmp }).code, 0);
  assert.deepEqual(fs.readdirSync(join(storeA, 'locks')), []);
});

test('two unpacks into one directory: the second fails at once naming the first, which then finishes', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'a': 'from the tar', 'd/b': 'b' });
  const store = join(dir, 's');
  const { tmp, locks } = lockTmp(dir);
  const tarBytes = spawnSync('tar', ['-cf', '-', '-C', join(dir, 'src'), '.']).stdout;
  const zip = join(dir, 'a.zip');
  assert.equal(tc(['pack', join(dir, 'src'), zip], store).code, 0);
  const out = join(dir, 'out');
  // The first unpack reads its tar from a pipe the test holds open: it has taken the lock and
  // waits for its input, provably in the middle of its work.
  const first = spawn(process.execPath, [bin, 'unpack', '-', out], { env: { ...process.env, TREECAST_STORE: store, TMPDIR: tmp }, stdio: ['pipe', 'ignore', 'pipe'] });
  let firstErr = '';
  first.stderr.on('data', (d) => (firstErr += d));
  const firstExit = new Promise<number | null>((r) => first.on('close', (code) => r(code)));
  try {
    for (let i = 0; i < 3000 && !(fs.existsSync(join(tmp, `treecast-locks-${process.getuid!()}`)) && locks().some((n) => n.endsWith('.lock'))); i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    const second = tc(['unpack', zip, out], store, { TMPDIR: tmp });
    assert.equal(second.code, 9, second.err);
    assert.ok(second.err.includes(`unpack (pid ${first.pid})`), second.err);
    first.stdin.end(tarBytes);
    assert.equal(await firstExit, 0, firstErr);
  } finally {
    first.kill('SIGKILL');
  }
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')));
  assert.deepEqual(locks(), [], 'the lock was released');
});

test('unpack takes --store like every command: a DIR holding that store is refused, and it shares the lock with checkout --store', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { a: 'a' });
  manyFiles(join(dir, 'big'), 900);
  const store = join(dir, 'top', 'store');
  const zip = join(dir, 'a.zip');
  const unrelated = join(dir, 'unrelated-default-store');
  assert.equal(tc(['pack', join(dir, 'src'), zip, '--store', store], unrelated).code, 0);
  writeTree(join(dir, 'top'), { mine: 'keep' });
  const before = describeTree(join(dir, 'top'));
  const r = tc(['unpack', zip, join(dir, 'top'), '--force', '--store', store], unrelated);
  assert.equal(r.code, 7, r.err);
  assert.match(r.err, /ERR_TREECAST_TARGET/);
  assert.ok(r.err.includes(join(fs.realpathSync(dir), 'top', 'store')), r.err);
  assert.deepEqual(describeTree(join(dir, 'top')), before);

  assert.equal(tc(['snapshot', join(dir, 'big'), '--ref', 'big', '--store', store], unrelated).code, 0);
  const out = join(dir, 'out');
  const pause = join(dir, 'pause');
  const first = spawn(process.execPath, [bin, 'checkout', 'big', out, '--jobs', '1', '--store', store], {
    env: { ...process.env, TREECAST_STORE: unrelated, TREECAST_TEST_PAUSE_FILE: pause },
    stdio: 'ignore',
  });
  const firstExit = new Promise<number | null>((res) => first.on('close', (code) => res(code)));
  try {
    await waitFor(pause, first);
    const second = tc(['unpack', zip, out, '--force', '--store', store], unrelated);
    assert.equal(second.code, 9, second.err);
    assert.ok(second.err.includes(`pid ${first.pid}`), second.err);
    fs.rmSync(pause);
    assert.equal(await firstExit, 0);
  } finally {
    first.kill('SIGKILL');
  }
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'big')));
});

/** A store A holding the 900-file tree 'big' (as src/), a store B holding 'small' (as other/), and other/ as a zip and a tar. */
function twoStores(dir: string): { storeA: string; storeB: string; zip: string; tar: string; small: string } {
  manyFiles(join(dir, 'src'), 900);
  writeTree(join(dir, 'other'), { 'x': 'other tree', 'd0/f0': 'not the first tree' });
  const [storeA, storeB] = [join(dir, 'a'), join(dir, 'b')];
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 'big'], storeA).code, 0);
  const snap = tc(['snapshot', join(dir, 'other'), '--ref', 'small'], storeB);
  assert.equal(snap.code, 0, snap.err);
  const zip = join(dir, 'other.zip');
  const tar = join(dir, 'other.tar');
  assert.equal(tc(['pack', join(dir, 'other'), zip], storeB).code, 0);
  assert.equal(tc(['pack', join(dir, 'other'), tar], storeB).code, 0);
  return { storeA, storeB, zip, tar, small: snap.out.trim().split('\n').pop()! };
}

test('two checkouts into one directory from two different stores: the second is refused (exit 9) while the first holds it, however it names the directory or the store; unpack and checkout --remote too; the directory is the first tree', async () => {
  const dir = tempDir();
  const { storeA, storeB, zip, tar, small } = twoStores(dir);
  const { tmp, locks } = lockTmp(dir);
  const out = join(dir, 'out');
  fs.symlinkSync(out, join(dir, 'link'));
  const server = await startServer(storeB);
  const first = pausedCheckout('big', out, join(dir, 'pause'), { TREECAST_STORE: storeA, TMPDIR: tmp });
  try {
    await waitFor(join(dir, 'pause'), first.child);
    const env = { TMPDIR: tmp, TREECAST_STORE: storeA };
    for (const args of [
      ['checkout', 'small', out, '--force', '--store', storeB],
      ['checkout', 'small', join(dir, 'link'), '--force', '--store', storeB],
      ['checkout', 'small', join(dir, 'link', '..', 'out'), '--force', '--clean', '--store', storeB],
      ['unpack', zip, out, '--force', '--store', storeB],
      ['unpack', tar, join(dir, 'link'), '--force', '--store', storeB],
      ['checkout', small, out, '--force', '--remote', server.url, '--store', join(dir, 'c')],
      ['checkout', small, out, '--force', '--remote', server.url, '--direct', '--store', join(dir, 'c')],
    ]) assertBusy(await tcAsync(args, env), first.child.pid, args.join(' '));
    // The store named by TREECAST_STORE alone, as a user of two store settings would.
    assertBusy(await tcAsync(['checkout', 'small', join(dir, 'link'), '--force'], { TMPDIR: tmp, TREECAST_STORE: storeB }), first.child.pid, 'TREECAST_STORE');
    fs.rmSync(join(dir, 'pause'));
    const done = await first.exit;
    assert.equal(done.code, 0, done.err);
  } finally {
    first.child.kill('SIGKILL');
    await server.close();
  }
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')), 'exactly the first tree: nothing of the second, nothing lost');
  assert.deepEqual(locks(), [], 'the lock was released');
  assert.deepEqual(fs.readdirSync(join(storeA, 'locks')), [], 'and the pin of its tree');
  // Once given back, the other store's checkout goes ahead.
  assert.equal(tc(['checkout', 'small', join(dir, 'link'), '--force', '--clean'], storeB, { TMPDIR: tmp }).code, 0);
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'other')));
});

test('a directory mounted at two places is one target: the lock is keyed by its device and inode too', { skip: process.getuid?.() !== 0 && 'needs root to bind-mount' }, async () => {
  const dir = tempDir();
  const { storeA, storeB } = twoStores(dir);
  const { tmp, locks } = lockTmp(dir);
  const out = join(dir, 'out');
  const alias = join(dir, 'alias');
  fs.mkdirSync(out);
  fs.mkdirSync(alias);
  spawnSync('mount', ['--bind', out, alias]);
  try {
    assert.equal(fs.statSync(alias).ino, fs.statSync(out).ino, 'bind-mounted');
    const first = pausedCheckout('big', out, join(dir, 'pause'), { TREECAST_STORE: storeA, TMPDIR: tmp });
    try {
      await waitFor(join(dir, 'pause'), first.child);
      assertBusy(tc(['checkout', 'small', alias, '--force'], storeB, { TMPDIR: tmp }), first.child.pid, 'through the other mount');
      fs.rmSync(join(dir, 'pause'));
      assert.equal((await first.exit).code, 0);
    } finally {
      first.child.kill('SIGKILL');
    }
  } finally {
    spawnSync('umount', [alias]);
  }
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')));
  assert.deepEqual(locks(), []);
});

test('root and the user who owns a directory never write it at once, from their own stores, whichever comes first', { skip: process.getuid?.() !== 0 && 'needs root to run a command as another user' }, async () => {
  const dir = tempDir();
  fs.chmodSync(dir, 0o755);
  const { storeA, storeB } = twoStores(dir);
  const { tmp, locks } = lockTmp(dir);
  // nobody's own store, holding both trees.
  const storeN = join(dir, 'n');
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 'big'], storeN).code, 0);
  assert.equal(tc(['snapshot', join(dir, 'other'), '--ref', 'small'], storeN).code, 0);
  spawnSync('chown', ['-R', `${NOBODY.uid}:${NOBODY.gid}`, storeN]);
  const [out1, out2] = [join(dir, 'out1'), join(dir, 'out2')];
  for (const out of [out1, out2]) {
    fs.mkdirSync(out);
    fs.chownSync(out, NOBODY.uid, NOBODY.gid);
  }
  const pause = join(tmp, 'pause');
  // root first, in nobody's directory: it locks in nobody's folder (made for nobody), where nobody looks.
  let first = pausedCheckout('big', out1, pause, { TREECAST_STORE: storeA, TMPDIR: tmp });
  try {
    await waitFor(pause, first.child);
    assertBusy(await tcAsync(['checkout', 'small', out1, '--force', '--store', storeN], { TMPDIR: tmp }, NOBODY), first.child.pid, 'nobody after root');
    const owned = fs.statSync(join(tmp, `treecast-locks-${NOBODY.uid}`));
    assert.deepEqual([owned.uid, owned.mode & 0o777], [NOBODY.uid, 0o700], "nobody's private folder, made by root");
    fs.rmSync(pause);
    assert.equal((await first.exit).code, 0);
  } finally {
    first.child.kill('SIGKILL');
  }
  assert.deepEqual(describeTree(out1), describeTree(join(dir, 'src')));
  // nobody first: root looks in the owner's folder.
  first = pausedCheckout('big', out2, pause, { TREECAST_STORE: storeN, TMPDIR: tmp }, NOBODY);
  try {
    await waitFor(pause, first.child);
    assertBusy(tc(['checkout', 'small', out2, '--force'], storeB, { TMPDIR: tmp }), first.child.pid, 'root after nobody');
    fs.rmSync(pause);
    const done = await first.exit;
    assert.equal(done.code, 0, done.err);
  } finally {
    first.child.kill('SIGKILL');
  }
  assert.deepEqual(describeTree(out2), describeTree(join(dir, 'src')));
  assert.deepEqual(locks(NOBODY.uid), []);
});
