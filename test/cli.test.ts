import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { describeTree, tempDir, writeTree } from './helpers/tmp.js';

const bin = new URL('../../bin/treecast', import.meta.url).pathname;

function tc(args: string[], opts: { store: string; input?: Buffer }) {
  const r = spawnSync(process.execPath, [bin, ...args], {
    env: { ...process.env, TREECAST_STORE: opts.store },
    input: opts.input,
    encoding: 'buffer',
  });
  return { code: r.status, out: r.stdout.toString(), err: r.stderr.toString(), raw: r.stdout };
}

test('the main job in two lines: snapshot prints the digest last; checkout materializes it; refs work as digests', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  writeTree(join(dir, 'src'), { 'a.txt': 'alpha', 'bin/run': { text: '#!/bin/sh\n', exec: true }, 'l': { link: 'a.txt' } });
  const snap = tc(['snapshot', join(dir, 'src'), '--ref', 'v1'], { store });
  assert.equal(snap.code, 0, snap.err);
  const digest = snap.out.trim().split('\n').pop()!;
  assert.match(digest, /^[0-9a-f]{64}\/\d+$/);
  assert.equal(tc(['checkout', digest, join(dir, 'out')], { store }).code, 0);
  assert.deepEqual(describeTree(join(dir, 'out')), describeTree(join(dir, 'src')));
  assert.equal(tc(['checkout', 'v1', join(dir, 'out2')], { store }).code, 0);
  assert.deepEqual(describeTree(join(dir, 'out2')), describeTree(join(dir, 'src')));
  assert.equal(tc(['refs'], { store }).out, `${digest} v1\n`);
  const ls = tc(['ls', 'v1'], { store }).out;
  assert.match(ls, /^100755 file {4}[0-9a-f]{64}\/10\tbin\/run$/m);
  assert.match(ls, /^120000 symlink -> a\.txt\tl$/m);
});

test('--json gives one JSON object with the counts', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  writeTree(join(dir, 'src'), { 'a': 'a', 'e': '', 'd/x': 'x' });
  const snap = JSON.parse(tc(['snapshot', join(dir, 'src'), '--json'], { store }).out);
  assert.equal(snap.ok, true);
  assert.equal(snap.files, 3);
  const co = JSON.parse(tc(['checkout', snap.digest, join(dir, 'out'), '--json', '--method', 'copy'], { store }).out);
  assert.equal(co.copied, 2);
  assert.equal(co.empty, 1);
  assert.equal(co.directories, 1);
  assert.equal(typeof co.seconds, 'number');
});

test('pack DIR leaves out the store (TREECAST_STORE or --store) when it lies inside DIR, as snapshot does', () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'a': 'a', 'd/x': 'x' });
  const store = join(dir, 'src', 'd', '.st');
  assert.equal(tc(['snapshot', join(dir, 'src')], { store }).code, 0);
  for (const args of [[], ['--store', store]]) {
    const out = join(dir, 'out.tar');
    const r = tc(['pack', join(dir, 'src'), out, ...args], { store: args.length ? join(dir, 'elsewhere') : store });
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(spawnSync('tar', ['-tf', out], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).sort(), ['a', 'd/', 'd/x'], args.join(' '));
    fs.rmSync(out);
  }
});

test('blob put and get round-trip bytes through standard input and output', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  const bytes = Buffer.from([0, 1, 2, 255, 10, 13]);
  const put = tc(['blob', 'put', '-'], { store, input: bytes });
  assert.equal(put.code, 0, put.err);
  const got = tc(['blob', 'get', put.out.trim()], { store });
  assert.deepEqual(got.raw, bytes);
});

test('ls PATH: a directory lists what is below it, a file or symlink its one entry; a path the tree lacks is not found (exit 3) naming the path and the tree', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  writeTree(join(dir, 'src'), { 'a/b/f': 'f', 'a/g': 'g', 'top': 't', 'l': { link: 'top' } });
  const digest = tc(['snapshot', join(dir, 'src'), '--ref', 'r'], { store }).out.trim().split('\n').pop()!;
  const paths = (args: string[]) => {
    const r = tc(['ls', ...args], { store });
    assert.equal(r.code, 0, r.err);
    return r.out.trimEnd().split('\n').map((l) => l.split('\t')[1]);
  };
  assert.deepEqual(paths(['r', 'a']), ['a/g', 'a/b/', 'a/b/f']);
  assert.deepEqual(paths(['r', './a/b/']), ['a/b/f']);
  assert.deepEqual(paths(['r', 'a/b/f']), ['a/b/f']);
  assert.deepEqual(paths(['r', 'l']), ['l']);
  assert.deepEqual(JSON.parse(tc(['ls', 'r', 'top', '--json'], { store }).out).map((e: { path: string; type: string }) => [e.type, e.path]), [['file', 'top']]);
  for (const [args, path] of <[string[], string][]>[[['r', 'a/nosuch'], 'a/nosuch'], [['r', 'nosuch/x'], 'nosuch/x'], [['r', 'a/b/f/x'], 'a/b/f/x'], [['r', 'top/'], 'top/'], [[digest, 'a/zz'], 'a/zz']]) {
    const r = tc(['ls', ...args, '--json'], { store });
    assert.equal(r.code, 3, `${args.join(' ')}: ${r.err}`);
    assert.match(r.err, /^treecast: error\[ERR_TREECAST_PATH_NOT_FOUND\]: /);
    assert.ok(r.err.includes(`'${path}'`) && r.err.includes(digest), `names the path and the tree: ${r.err}`);
    const e = JSON.parse(r.out).error;
    assert.deepEqual([e.code, e.path, e.digest], ['ERR_TREECAST_PATH_NOT_FOUND', path, digest]);
    assert.equal(tc(['ls', ...args], { store }).out, '', 'nothing is listed');
  }
  // A ref that does not exist stays a ref miss, with the same exit code.
  assert.match(tc(['ls', 'nosuch', 'a'], { store }).err, /ERR_TREECAST_REF_NOT_FOUND/);
});

test('diff lists added, removed and changed paths', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  writeTree(join(dir, 'a'), { 'same': '1', 'changed': 'old', 'gone': 'x' });
  writeTree(join(dir, 'b'), { 'same': '1', 'changed': 'new', 'added/f': 'y' });
  tc(['snapshot', join(dir, 'a'), '--ref', 'a'], { store });
  tc(['snapshot', join(dir, 'b'), '--ref', 'b'], { store });
  assert.equal(tc(['diff', 'a', 'b'], { store }).out, 'A\tadded/\nA\tadded/f\nM\tchanged\nD\tgone\n');
});

const bad: [string, (dir: string, store: string) => string[], number, RegExp][] = [
  ['a malformed digest', () => ['checkout', 'abc/12', '/nonexistent-target'], 2, /ERR_TREECAST_INVALID_DIGEST/],
  ['an unknown option value', () => ['checkout', 'x', 'y', '--method', 'teleport'], 2, /teleport/],
  ['--jobs out of range', () => ['checkout', 'x', 'y', '--jobs', '0'], 2, /--jobs/],
  ['a digest not in the store', (dir) => ['checkout', `${'a'.repeat(64)}/10`, join(dir, 'o')], 3, /ERR_TREECAST_BLOB_NOT_FOUND/],
  ['a ref not in the store', (dir) => ['checkout', 'nope', join(dir, 'o')], 3, /ERR_TREECAST_REF_NOT_FOUND/],
  ['a target that is a file', (dir, store) => {
    writeTree(join(dir, 'src'), { a: 'a' });
    fs.writeFileSync(join(dir, 'file'), 'x');
    const d = tc(['snapshot', join(dir, 'src')], { store }).out.trim();
    return ['checkout', d, join(dir, 'file')];
  }, 7, /ERR_TREECAST_TARGET/],
  ['a hostile Directory message stored with blob put', (dir, store) => {
    const name = Buffer.from('..');
    const digest = Buffer.concat([Buffer.from([0x0a, 64]), Buffer.from('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')]);
    const body = Buffer.concat([Buffer.from([0x0a, name.length]), name, Buffer.from([0x12, digest.length]), digest]);
    fs.writeFileSync(join(dir, 'evil'), Buffer.concat([Buffer.from([0x0a, body.length]), body]));
    const d = tc(['blob', 'put', join(dir, 'evil')], { store }).out.trim();
    return ['checkout', d, join(dir, 'o')];
  }, 6, /ERR_TREECAST_INVALID_TREE/],
  ['a corrupt blob read with blob get', (dir, store) => {
    fs.writeFileSync(join(dir, 'f'), 'genuine');
    const d = tc(['blob', 'put', join(dir, 'f')], { store }).out.trim();
    const p = join(store, 'cas', d.slice(0, 2), d.slice(0, 64));
    fs.chmodSync(p, 0o644);
    fs.writeFileSync(p, 'GENUINE');
    return ['blob', 'get', d];
  }, 5, /ERR_TREECAST_DIGEST_MISMATCH/],
];

for (const [what, setup, code, message] of bad) {
  test(`${what}: exit code ${code} and a coded error`, () => {
    const dir = tempDir();
    const store = join(dir, 's');
    const r = tc(setup(dir, store), { store });
    assert.equal(r.code, code, r.err);
    assert.match(r.err, message);
    if (code === 5) assert.equal(r.out, '', 'no byte of a corrupt blob is written');
  });
}

test('a checkout refused for local changes exits 4 and lists the paths', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  writeTree(join(dir, 'a'), { f: 'one' });
  writeTree(join(dir, 'b'), { f: 'two' });
  tc(['snapshot', join(dir, 'a'), '--ref', 'a'], { store });
  tc(['snapshot', join(dir, 'b'), '--ref', 'b'], { store });
  assert.equal(tc(['checkout', 'a', join(dir, 'o')], { store }).code, 0);
  fs.writeFileSync(join(dir, 'o', 'f'), 'mine');
  const r = tc(['checkout', 'b', join(dir, 'o'), '--json'], { store });
  assert.equal(r.code, 4);
  assert.deepEqual(JSON.parse(r.out).error.paths, ['f']);
});

test('--help explains every option of snapshot and checkout, and lists the exit codes', () => {
  const top = tc(['--help'], { store: '/nonexistent' }).out;
  assert.match(top, /Exit codes:/);
  const co = tc(['checkout', '--help'], { store: '/nonexistent' }).out;
  for (const opt of ['--method', '--force', '--jobs', '--json', '--store', '--verify']) assert.ok(co.includes(opt), opt);
  const sn = tc(['snapshot', '--help'], { store: '/nonexistent' }).out;
  for (const opt of ['--ref', '--exclude', '--follow-symlinks', '--strict', '--json', '--store']) assert.ok(sn.includes(opt), opt);
});

test('help asked for prints on stdout and exits 0; a missing command prints it on stderr and exits 2, as a usage error', () => {
  const store = '/nonexistent';
  for (const args of [['--help'], ['help'], ['help', 'checkout'], ['blob', '--help']]) {
    const r = tc(args, { store });
    assert.equal(r.code, 0, args.join(' '));
    assert.match(r.out, /^Usage: treecast/);
  }
  for (const args of [[], ['blob']]) {
    const r = tc(args, { store });
    assert.equal(r.code, 2, `'treecast ${args.join(' ')}' exits 2`);
    assert.equal(r.out, '');
    assert.match(r.err, /^Usage: treecast/);
  }
});

test('--json: a usage error found while parsing (missing argument, unknown option, bad value) is also one JSON object on stdout', () => {
  const store = '/nonexistent';
  for (const [args, message] of [
    [['checkout', 'r', '--json'], /missing required argument 'dir'/],
    [['checkout', 'r', 'out', '--json', '--bogus'], /unknown option '--bogus'/],
    [['snapshot', 'src', '--jobs', '0', '--json'], /--jobs must be a whole number/],
  ] as const) {
    const r = tc([...args], { store });
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, message, 'the message is on stderr as before');
    const out = JSON.parse(r.out) as { ok: boolean; error: { code: string; message: string } };
    assert.equal(out.ok, false);
    assert.equal(out.error.code, 'ERR_TREECAST_USAGE');
    assert.match(out.error.message, message);
  }
  assert.equal(tc(['checkout', 'r', 'out', '--bogus'], { store }).out, '', 'without --json, nothing on stdout');
});

test('every command\'s --help fits in 100 columns, option defaults shown only where they are values', () => {
  const top = tc(['--help'], { store: '/nonexistent' }).out;
  const names = [...top.matchAll(/^ {2}([a-z]+) /gm)].map((m) => m[1]!).filter((n) => n !== 'help');
  assert.ok(names.length >= 15, names.join(' '));
  for (const args of [[], ...names.map((n) => [n]), ['blob', 'put'], ['blob', 'get']]) {
    const out = tc([...args, '--help'], { store: '/nonexistent' }).out;
    for (const line of out.split('\n')) assert.ok(line.length <= 100, `${args.join(' ')} --help: a line of ${line.length} columns: ${line}`);
    assert.doesNotMatch(out, /\(default: \[\]\)/, `${args.join(' ')} --help`);
  }
});

test('ls, diff and checkout of a digest that names a file blob say it is not a tree, naming the digest', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  writeTree(join(dir, 'src'), { 'a.txt': 'alpha bytes', 'd/b': 'beta' });
  const tree = tc(['snapshot', join(dir, 'src'), '--ref', 'v1'], { store }).out.trim().split('\n').pop()!;
  const file = tc(['blob', 'put', '-'], { store, input: Buffer.from('file 3\n') }).out.trim();
  assert.match(file, /^[0-9a-f]{64}\/7$/);
  for (const args of [['ls', file], ['ls', file, 'x'], ['diff', file, 'v1'], ['diff', tree, file], ['checkout', file, join(dir, 'out')]]) {
    const r = tc(args, { store });
    assert.equal(r.code, 6, `${args[0]}: ${r.err}`);
    assert.ok(r.err.includes(`error[ERR_TREECAST_INVALID_TREE]: ${file} names a blob that is not a Directory (a tree)`), `${args.join(' ')}: ${r.err}`);
    assert.ok(r.err.includes(`hint: ${args[0]} takes the digest of a tree`), r.err);
  }
  assert.equal(fs.existsSync(join(dir, 'out')), false, 'checkout wrote nothing');
});

test('a path argument that is not UTF-8 is refused (exit 2, bytes escaped), never taken as its lossy spelling; a real U+FFFD and an --exclude glob are not', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  writeTree(join(dir, 'src'), { a: 'alpha' });
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 't'], { store }).code, 0);
  // Arguments as bytes: through sh, which passes printf's \377 byte on unchanged.
  const raw = (...args: string[]) => {
    const r = spawnSync('/bin/sh', ['-c', 'exec "$@" "$(printf "$TC_LAST")"', 'sh', process.execPath, bin, ...args.slice(0, -1)], {
      env: { ...process.env, TREECAST_STORE: store, TC_LAST: args[args.length - 1]! },
      encoding: 'utf8',
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const lossy = join(dir, 'out\ufffd');
  const refused = raw('checkout', 't', `${dir}/out\\377`);
  assert.equal(refused.code, 2, refused.err);
  assert.ok(refused.err.includes(`'${dir}/out\\xff'`) && refused.err.includes('not valid UTF-8'), refused.err);
  assert.ok(!fs.existsSync(lossy), 'nothing written under the lossy name');
  assert.equal(raw('pack', 't', `${dir}/p\\377.zip`).code, 2);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['s', 'src']);
  // A name that really holds U+FFFD is a name like any other.
  const real = tc(['checkout', 't', lossy], { store });
  assert.equal(real.code, 0, real.err);
  assert.equal(fs.readFileSync(join(lossy, 'a'), 'utf8'), 'alpha');
  // An --exclude glob is matched against names read the same way: a name that is not UTF-8 still matches it.
  fs.writeFileSync(Buffer.concat([Buffer.from(`${dir}/src/`), Buffer.from([0x62, 0xff])]), 'x');
  const excluded = raw('snapshot', join(dir, 'src'), '--exclude', 'b\\377');
  assert.equal(excluded.code, 0, excluded.err);
});
