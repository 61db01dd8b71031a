/**
 * Paths that do not exist or cannot be written, where a command used to answer with the wrong
 * error or quietly make something: push of a missing directory, verify and gc of a missing store,
 * and a store whose `locks` folder the user may not write.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { tempDir } from './helpers/tmp.js';
import { publicBin } from './helpers/public-package.js';

const bin = new URL('../../bin/treecast', import.meta.url).pathname;
/** The uid and gid of `nobody` on Debian. */
const NOBODY = { uid: 65534, gid: 65534 };

/** In `dir`: a shared temp folder (1777, for TMPDIR) and an empty target folder `nobody` owns. */
function nobodysTempAndTarget(dir: string): { tmp: string; out: string } {
  const tmp = join(dir, 'tmp');
  fs.mkdirSync(tmp);
  fs.chmodSync(tmp, 0o1777);
  const out = join(dir, 'out');
  fs.mkdirSync(out);
  fs.chownSync(out, NOBODY.uid, NOBODY.gid);
  return { tmp, out };
}

function run(args: string[], opts: { asNobody?: boolean; env?: NodeJS.ProcessEnv; cwd?: string } = {}) {
  const r = spawnSync(process.execPath, [opts.asNobody ? publicBin() : bin, ...args], {
    encoding: 'utf8',
    ...(opts.asNobody ? NOBODY : {}),
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** A temp dir holding `src/f` and a store at `dir/store` where `src` is the ref 'r' (packed as `dir/r.zip` with `zip`). */
function storeWithRef(o: { zip?: boolean } = {}): { dir: string; store: string } {
  const dir = tempDir();
  const store = join(dir, 'store');
  fs.mkdirSync(join(dir, 'src'));
  fs.writeFileSync(join(dir, 'src', 'f'), 'f');
  execFileSync(process.execPath, [bin, 'snapshot', join(dir, 'src'), '--store', store, '--ref', 'r'], { stdio: 'ignore' });
  if (o.zip) execFileSync(process.execPath, [bin, 'pack', 'r', join(dir, 'r.zip'), '--store', store], { stdio: 'ignore' });
  return { dir, store };
}

function assertCodedError(r: { code: number | null; err: string }, code: number, errorCode: string, path: string): void {
  assert.equal(r.code, code, r.err);
  assert.match(r.err, new RegExp(`^treecast: error\\[${errorCode}\\]: `, 'm'));
  assert.ok(r.err.includes(path), `the message names ${path}: ${r.err}`);
  assert.doesNotMatch(r.err, /internal error|\n\s+at /);
}

test('push of a path that does not exist says so (exit 7, like snapshot), not "invalid ref name"', () => {
  const { dir, store } = storeWithRef();
  // The server is never reached: the source is resolved first.
  const url = 'http://127.0.0.1:9/';
  // A relative path is named as the absolute path it stands for.
  for (const [missing, named] of [[join(dir, 'nosuch'), join(dir, 'nosuch')], ['./nosuch-here', join(dir, 'nosuch-here')]] as const) {
    const r = run(['push', missing, url, '--store', store], { cwd: dir });
    assertCodedError(r, 7, 'ERR_TREECAST_TARGET', named);
    assert.doesNotMatch(r.err, /invalid ref name/);
    const json = run(['push', missing, url, '--store', store, '--json'], { cwd: dir });
    assert.equal(json.code, 7);
    assert.equal(JSON.parse(json.out.trim()).error.code, 'ERR_TREECAST_TARGET');
  }
  // A name that could be a ref and is neither a ref nor a directory is still "not found" (exit 3).
  assertCodedError(run(['push', 'nosuch', url, '--store', store]), 3, 'ERR_TREECAST_REF_NOT_FOUND', 'nosuch');
});

test('a file where a directory belongs: every command taking DIR says it is not a directory (exit 7, naming it) and leaves the file alone', () => {
  const { dir, store } = storeWithRef({ zip: true });
  // 'afile' could be a ref name too: it exists, so it is taken as the path it is.
  const file = join(dir, 'afile');
  fs.writeFileSync(file, 'mine\n');
  const url = 'http://127.0.0.1:9/';
  for (const args of [['status', 'afile'], ['checkout', 'r', 'afile'], ['unpack', join(dir, 'r.zip'), 'afile'], ['snapshot', 'afile'], ['push', 'afile', url], ['pack', 'afile', join(dir, 'o.zip')]]) {
    const r = run([...args, '--store', store], { cwd: dir });
    assertCodedError(r, 7, 'ERR_TREECAST_TARGET', file);
    assert.match(r.err, /not a directory/, args.join(' '));
    assert.equal(fs.readFileSync(file, 'utf8'), 'mine\n');
  }
});

test('an empty argument or option value (an unset shell variable) is refused with exit 2, never taken as the current directory', () => {
  const { dir, store } = storeWithRef({ zip: true });
  // The current directory holds the user's files, which the tree does not have.
  const cwd = join(dir, 'work');
  fs.mkdirSync(cwd);
  fs.writeFileSync(join(cwd, 'mine.txt'), 'mine\n');
  const before = fs.readdirSync(cwd);
  for (const [args, named] of [
    [['checkout', 'r', '', '--force', '--clean', '--store', store], 'DIR'],
    [['unpack', join(dir, 'r.zip'), '', '--force', '--store', store], 'DIR'],
    [['snapshot', '', '--ref', 'cwd', '--store', store], 'DIR'],
    [['status', '', '--store', store], 'DIR'],
    [['pack', '', join(dir, 'o.zip'), '--store', store], 'SOURCE'],
    [['push', '', 'http://127.0.0.1:9/', '--store', store], 'SOURCE'],
    [['ls', 'r', '--store', ''], '--store'],
    [['snapshot', join(dir, 'src'), '--exclude', '', '--store', store], '--exclude'],
  ] as const) {
    const r = run([...args], { cwd });
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
    assert.match(r.err, /^treecast: error\[ERR_TREECAST_USAGE\]: /m);
    assert.ok(r.err.includes(named), `${args.join(' ')} names ${named}: ${r.err}`);
    assert.deepEqual(fs.readdirSync(cwd), before, `${args.join(' ')} left the current directory as it was`);
    assert.equal(fs.readFileSync(join(cwd, 'mine.txt'), 'utf8'), 'mine\n');
  }
  assert.equal(spawnSync(process.execPath, [bin, 'ls', 'cwd', '--store', store]).status, 3, 'no snapshot of the current directory was recorded');
});

test('verify and gc of a store that does not exist fail naming it (exit 7) and create nothing', () => {
  const dir = tempDir();
  fs.mkdirSync(join(dir, 'not-a-store'));
  fs.writeFileSync(join(dir, 'not-a-store', 'keep'), 'user file');
  for (const cmd of [['verify'], ['verify', '--repair'], ['gc'], ['gc', '--dry-run']]) {
    const missing = join(dir, 'nosuch', 'store');
    assertCodedError(run([...cmd, '--store', missing]), 7, 'ERR_TREECAST_FS', missing);
    assert.ok(!fs.existsSync(join(dir, 'nosuch')), `${cmd.join(' ')} created ${missing}`);
    // Through TREECAST_STORE the same.
    assertCodedError(run(cmd, { env: { TREECAST_STORE: missing } }), 7, 'ERR_TREECAST_FS', missing);
    assert.ok(!fs.existsSync(join(dir, 'nosuch')));
    // A directory that is not a store is left as it was.
    const other = join(dir, 'not-a-store');
    assertCodedError(run([...cmd, '--store', other]), 7, 'ERR_TREECAST_FS', other);
    assert.deepEqual(fs.readdirSync(other), ['keep']);
  }
  const json = run(['gc', '--store', join(dir, 'nosuch'), '--json']);
  assert.equal(json.code, 7);
  assert.equal(JSON.parse(json.out.trim()).error.path, join(dir, 'nosuch'));
});

test('status, ls, diff, refs and blob get read a store that does not exist as an error naming it (exit 7), and create nothing', () => {
  const { dir, store } = storeWithRef();
  const digest = run(['refs', '--store', store, '--json']).out;
  const root = (JSON.parse(digest) as { digest: string }[])[0]!.digest;
  execFileSync(process.execPath, [bin, 'checkout', 'r', join(dir, 'out'), '--store', store], { stdio: 'ignore' });
  for (const cmd of [['status', join(dir, 'out')], ['ls', root], ['diff', root, root], ['refs'], ['blob', 'get', root]]) {
    const missing = join(dir, 'nosuch', 'store');
    assertCodedError(run([...cmd, '--store', missing]), 7, 'ERR_TREECAST_FS', missing);
    assert.ok(!fs.existsSync(join(dir, 'nosuch')), `${cmd.join(' ')} created ${missing}`);
    assertCodedError(run(cmd, { env: { TREECAST_STORE: missing } }), 7, 'ERR_TREECAST_FS', missing);
    assert.ok(!fs.existsSync(join(dir, 'nosuch')), `${cmd.join(' ')} created ${missing}`);
  }
  // The same commands on the store itself still answer.
  assert.equal(run(['status', join(dir, 'out'), '--store', store]).code, 0);
  assert.equal(run(['diff', root, 'r', '--store', store]).code, 0);
});

test('a store whose locks folder the user cannot write: checkout locks in the private temp folder instead', { skip: process.getuid?.() !== 0 && 'needs root to run a command as another user' }, () => {
  const dir = tempDir('tc-locks');
  fs.chmodSync(dir, 0o755);
  fs.mkdirSync(join(dir, 'src'));
  fs.writeFileSync(join(dir, 'src', 'f'), 'f');
  const store = join(dir, 'store');
  execFileSync(process.execPath, [bin, 'snapshot', join(dir, 'src'), '--store', store, '--ref', 'r'], { stdio: 'ignore' });
  execFileSync('chown', ['-R', `${NOBODY.uid}:${NOBODY.gid}`, store]);
  // The user's store, but a locks folder of root's that the user may only read (the snapshot made it).
  fs.chmodSync(join(store, 'locks'), 0o755);
  fs.chownSync(join(store, 'locks'), 0, 0);
  const { tmp, out } = nobodysTempAndTarget(dir);

  const r = run(['checkout', 'r', out, '--store', store], { asNobody: true, env: { TMPDIR: tmp } });
  assert.equal(r.code, 0, r.err);
  assert.equal(fs.readFileSync(join(out, 'f'), 'utf8'), 'f');
  // The lock went to the private fallback folder, and was given back.
  const fallback = join(tmp, `treecast-locks-${NOBODY.uid}`);
  assert.equal(fs.statSync(fallback).mode & 0o777, 0o700);
  assert.deepEqual(fs.readdirSync(fallback), []);
  assert.deepEqual(fs.readdirSync(join(store, 'locks')), []);
});

test('checkout from a store the user cannot write (root\'s): recorded in the private temp folder, so updates, status and the guard of local changes work', { skip: process.getuid?.() !== 0 && 'needs root to run a command as another user' }, () => {
  const dir = tempDir('tc-ro-store');
  fs.chmodSync(dir, 0o755);
  const store = join(dir, 'store');
  for (const [name, text] of [['v1', 'one'], ['v2', 'two']]) {
    fs.mkdirSync(join(dir, name));
    fs.writeFileSync(join(dir, name, 'f'), text);
    fs.writeFileSync(join(dir, name, 'same'), 'same');
    execFileSync(process.execPath, [bin, 'snapshot', join(dir, name), '--store', store, '--ref', name], { stdio: 'ignore' });
  }
  const { tmp, out } = nobodysTempAndTarget(dir);
  const as = (args: string[]) => run([...args, '--store', store], { asNobody: true, env: { TMPDIR: tmp } });

  let r = as(['checkout', 'v1', out]);
  assert.equal(r.code, 0, r.err);
  assert.ok(!fs.existsSync(join(store, 'checkouts')) || fs.readdirSync(join(store, 'checkouts')).length === 0, 'nothing written into the store');
  assert.equal(fs.statSync(join(tmp, `treecast-checkouts-${NOBODY.uid}`)).mode & 0o777, 0o700);
  r = as(['status', out]);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out, '');
  r = as(['checkout', 'v2', out]);
  assert.equal(r.code, 0, r.err);
  assert.equal(fs.readFileSync(join(out, 'f'), 'utf8'), 'two');
  // A local change is still known as one: the update back stops (exit 4) and keeps it.
  spawnSync(process.execPath, ['-e', `require('fs').writeFileSync(${JSON.stringify(join(out, 'f'))}, 'mine')`], NOBODY);
  r = as(['status', out]);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out, 'M f\n');
  r = as(['checkout', 'v1', out]);
  assert.equal(r.code, 4, r.err);
  assert.equal(fs.readFileSync(join(out, 'f'), 'utf8'), 'mine');
});

test('a directory that cannot be made under one that exists (/proc) is an error naming it, not a hang', { skip: !fs.existsSync('/proc/self') && 'needs /proc' }, () => {
  const { dir, store } = storeWithRef();
  const target = `/proc/treecast-test-${process.pid}`;
  // Node's recursive mkdirSync loops forever here, as mkdir says ENOENT under an existing parent.
  for (const args of [['checkout', 'r', target, '--store', store], ['checkout', 'r', join(target, 'a', 'b'), '--store', store], ['snapshot', join(dir, 'src'), '--store', target]]) {
    const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 30_000, killSignal: 'SIGKILL' });
    assert.equal(r.signal, null, `${args.join(' ')} did not end`);
    assertCodedError({ code: r.status, err: r.stderr }, 7, 'ERR_TREECAST_FS', target);
  }
});

test('pack OUT: an existing file is replaced only by a whole archive; a directory is refused; a symlink is replaced, never written through', () => {
  const dir = tempDir();
  const store = join(dir, 'store');
  fs.mkdirSync(join(dir, 'src'));
  fs.writeFileSync(join(dir, 'src', 'f'), 'f\n');
  // A directory at OUT: refused, left as it was.
  fs.mkdirSync(join(dir, 'out.zip'));
  fs.writeFileSync(join(dir, 'out.zip', 'mine'), 'mine\n');
  assertCodedError(run(['pack', join(dir, 'src'), join(dir, 'out.zip'), '--store', store]), 7, 'ERR_TREECAST_TARGET', join(dir, 'out.zip'));
  assert.equal(fs.readFileSync(join(dir, 'out.zip', 'mine'), 'utf8'), 'mine\n');
  // A file at OUT, and a pack that fails (a source that is neither a directory nor a ref): OUT is untouched.
  fs.writeFileSync(join(dir, 'old.tar'), 'the old archive\n');
  assertCodedError(run(['pack', join(dir, 'missing'), join(dir, 'old.tar'), '--store', store]), 3, 'ERR_TREECAST_REF_NOT_FOUND', join(dir, 'missing'));
  assert.equal(fs.readFileSync(join(dir, 'old.tar'), 'utf8'), 'the old archive\n');
  // An unreadable file in the source (as another user): OUT is untouched, no temporary is left.
  fs.chmodSync(dir, 0o777);
  fs.writeFileSync(join(dir, 'src', 'secret'), 'secret\n', { mode: 0o600 });
  fs.chmodSync(join(dir, 'old.tar'), 0o666);
  const denied = run(['pack', join(dir, 'src'), join(dir, 'old.tar'), '--store', join(dir, 'nobody-store')], { asNobody: true, env: { HOME: dir } });
  assert.notEqual(denied.code, 0, denied.err);
  assert.ok(denied.err.includes(join(dir, 'src', 'secret')), denied.err);
  assert.equal(fs.readFileSync(join(dir, 'old.tar'), 'utf8'), 'the old archive\n');
  assert.deepEqual(fs.readdirSync(dir).filter((n) => n.includes('.treecast-')), []);
  fs.rmSync(join(dir, 'src', 'secret'));
  // A symlink at OUT: the link itself is replaced by the archive; the file it pointed to is not written.
  fs.writeFileSync(join(dir, 'target.zip'), 'not to be overwritten\n');
  fs.symlinkSync(join(dir, 'target.zip'), join(dir, 'link.zip'));
  const r = run(['pack', join(dir, 'src'), join(dir, 'link.zip'), '--store', store]);
  assert.equal(r.code, 0, r.err);
  assert.equal(fs.readFileSync(join(dir, 'target.zip'), 'utf8'), 'not to be overwritten\n');
  assert.ok(fs.lstatSync(join(dir, 'link.zip')).isFile());
  assert.equal(execFileSync('unzip', ['-Z1', join(dir, 'link.zip')], { encoding: 'utf8' }).trim(), 'f');
});

test('pack OUT that is a device or a FIFO is refused (exit 7) and left as it was, never replaced by a file', () => {
  const { dir, store } = storeWithRef();
  execFileSync('mkfifo', [join(dir, 'fifo')]);
  const outs = [join(dir, 'fifo')];
  // A null device of our own (root only), as `pack DIR /dev/null` would meet it.
  if (process.getuid?.() === 0) {
    execFileSync('mknod', [join(dir, 'null'), 'c', '1', '3']);
    outs.push(join(dir, 'null'));
  }
  for (const out of outs) {
    const kind = fs.lstatSync(out).isFIFO() ? 'FIFO' : 'character device';
    for (const source of ['r', join(dir, 'src')]) {
      const r = run(['pack', source, out, '--store', store]);
      assertCodedError(r, 7, 'ERR_TREECAST_TARGET', out);
      assert.match(r.err, new RegExp(`it is a ${kind}`));
      const st = fs.lstatSync(out);
      assert.ok(kind === 'FIFO' ? st.isFIFO() : st.isCharacterDevice(), `${out} is still a ${kind}`);
    }
  }
  assert.deepEqual(fs.readdirSync(dir).filter((n) => n.includes('.treecast-')), []);
});

test('a ref name another ref is in the way of is refused before any work (exit 2), as git refuses it, and both refs stay', () => {
  const { dir, store } = storeWithRef({ zip: true });
  const snap = (args: string[]) => run(['snapshot', join(dir, 'src2'), '--store', store, ...args]);
  fs.mkdirSync(join(dir, 'src2'));
  fs.writeFileSync(join(dir, 'src2', 'new'), 'content no blob in the store has yet');
  assert.equal(run(['snapshot', join(dir, 'src'), '--store', store, '--ref', 'a/b']).code, 0);
  const blobs = () => fs.readdirSync(join(store, 'cas'), { recursive: true }).length;
  const before = blobs();
  const cases: [string[], string][] = [
    [['--ref', 'a'], "cannot write ref 'a': refs named 'a/…' exist"],
    [['--ref', 'r/x'], "cannot write ref 'r/x': ref 'r' exists"],
    [['--ref', 'r/x/y'], "cannot write ref 'r/x/y': ref 'r' exists"],
  ];
  for (const [args, message] of cases) assertCodedError(snap(args), 2, 'ERR_TREECAST_INVALID_REF', message);
  assertCodedError(run(['import', join(dir, 'r.zip'), '--store', store, '--ref', 'a']), 2, 'ERR_TREECAST_INVALID_REF', "refs named 'a/…' exist");
  // Refused before the server is asked (nothing listens on port 9).
  assertCodedError(run(['pull', 'r', 'http://127.0.0.1:9/', '--store', store, '--ref', 'r/x']), 2, 'ERR_TREECAST_INVALID_REF', "ref 'r' exists");
  assert.equal(blobs(), before, 'no blob was stored by a refused command');
  const refs = JSON.parse(run(['refs', '--store', store, '--json']).out) as { refs?: { name: string }[] } | { name: string }[];
  const names = (Array.isArray(refs) ? refs : refs.refs ?? []).map((r) => r.name).sort();
  assert.deepEqual(names, ['a/b', 'r']);
});
