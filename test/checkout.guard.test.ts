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

const bin = new URL('../../bin/treecast', import.meta.url).pathname;

function tc(args: string[], store: string, env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [bin, ...args], { env: { ...process.env, TREECAST_STORE: store, ...env }, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
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
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 'big'], store).code, 0);
  assert.equal(tc(['snapshot', join(dir, 'other'), '--ref', 'small'], store).code, 0);
  const zip = join(dir, 'other.zip');
  assert.equal(tc(['pack', join(dir, 'other'), zip], store).code, 0);
  const out = join(dir, 'out');
  const pause = join(dir, 'pause');
  const first = spawn(process.execPath, [bin, 'checkout', 'big', out, '--jobs', '1'], {
    env: { ...process.env, TREECAST_STORE: store, TREECAST_TEST_PAUSE_FILE: pause },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let firstErr = '';
  first.stderr.on('data', (d) => (firstErr += d));
  const firstExit = new Promise<number | null>((r) => first.on('close', (code) => r(code)));
  try {
    await waitFor(pause, first);
    for (const args of [['checkout', 'small', out, '--force'], ['checkout', 'small', join(dir, 'x', '..', 'out')], ['unpack', zip, out, '--force']]) {
      const second = tc(args, store);
      assert.equal(second.code, 9, `${args.join(' ')}: ${second.err}`);
      assert.match(second.err, /ERR_TREECAST_TARGET_BUSY/);
      assert.ok(second.err.includes(`pid ${first.pid}`), second.err);
    }
    fs.rmSync(pause);
    assert.equal(await firstExit, 0, firstErr);
  } finally {
    first.kill('SIGKILL');
  }
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')), 'the tree is exactly the first checkout, no lock file in it');
  assert.deepEqual(fs.readdirSync(join(store, 'locks')), [], 'the lock was released');
});

test('a lock left by a killed checkout is stale: the next checkout takes it over and finishes the tree', async () => {
  const dir = tempDir();
  manyFiles(join(dir, 'src'), 900);
  const store = join(dir, 's');
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 'big'], store).code, 0);
  const out = join(dir, 'out');
  const pause = join(dir, 'pause');
  const first = spawn(process.execPath, [bin, 'checkout', 'big', out, '--jobs', '1'], {
    env: { ...process.env, TREECAST_STORE: store, TREECAST_TEST_PAUSE_FILE: pause },
    stdio: 'ignore',
  });
  const exited = new Promise<void>((r) => first.on('close', () => r()));
  await waitFor(pause, first);
  first.kill('SIGKILL');
  await exited;
  const locks = fs.readdirSync(join(store, 'locks'));
  assert.equal(locks.length, 1, 'the killed process left its lock behind');
  assert.equal(JSON.parse(fs.readFileSync(join(store, 'locks', locks[0]!), 'utf8')).pid, first.pid);
  const again = tc(['checkout', 'big', out], store);
  assert.equal(again.code, 0, again.err);
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')));
  assert.deepEqual(fs.readdirSync(join(store, 'locks')), []);
});

test('two unpacks into one directory: the second fails at once naming the first, which then finishes', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'a': 'from the tar', 'd/b': 'b' });
  const store = join(dir, 's');
  const tarBytes = spawnSync('tar', ['-cf', '-', '-C', join(dir, 'src'), '.']).stdout;
  const zip = join(dir, 'a.zip');
  assert.equal(tc(['pack', join(dir, 'src'), zip], store).code, 0);
  const out = join(dir, 'out');
  // The first unpack reads its tar from a pipe the test holds open: it has taken the lock and
  // waits for its input, provably in the middle of its work.
  const first = spawn(process.execPath, [bin, 'unpack', '-', out], { env: { ...process.env, TREECAST_STORE: store }, stdio: ['pipe', 'ignore', 'pipe'] });
  let firstErr = '';
  first.stderr.on('data', (d) => (firstErr += d));
  const firstExit = new Promise<number | null>((r) => first.on('close', (code) => r(code)));
  try {
    for (let i = 0; i < 3000 && !(fs.existsSync(join(store, 'locks')) && fs.readdirSync(join(store, 'locks')).some((n) => n.endsWith('.lock'))); i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    const second = tc(['unpack', zip, out], store);
    assert.equal(second.code, 9, second.err);
    assert.ok(second.err.includes(`unpack (pid ${first.pid})`), second.err);
    first.stdin.end(tarBytes);
    assert.equal(await firstExit, 0, firstErr);
  } finally {
    first.kill('SIGKILL');
  }
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')));
  assert.equal(tc(['unpack', zip, join(dir, 'out2')], store).code, 0, 'the lock was released');
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
