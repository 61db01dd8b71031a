/**
 * Start-up: bin/treecast runs the CommonJS bundle in dist/cli/ (never the tsc output in dist/src),
 * each command initializes only the code it uses (a require hook lists every module the real
 * `bin/treecast` loads: the bundle files, and the built-in and external modules the bundled code
 * requires when a module of it is first used), and `--version` is answered before the CLI is loaded.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { VERSION } from '../src/version.js';
import { tempDir } from './helpers/tmp.js';

const bin = new URL('../../bin/treecast', import.meta.url).pathname;
const distCli = new URL('../cli/', import.meta.url).pathname;
const distSrc = new URL('../src/', import.meta.url).pathname;

/** Runs bin/treecast with a require hook; returns its stdout, exit code and the modules it loaded. */
function run(args: string[], store: string, binPath = bin): { stdout: string; status: number | null; modules: string[]; compiled: string[] } {
  const dir = tempDir('tc-startup');
  const hook = join(dir, 'hook.cjs');
  fs.writeFileSync(
    hook,
    `const Module = require('node:module');
const load = Module._load;
Module._load = function (request, parent, isMain) {
  const bare = request.replace(/^node:/, '');
  let id = request;
  try { id = Module.isBuiltin(request) ? 'node:' + bare : Module._resolveFilename(request, parent, isMain); } catch {}
  process._rawDebug('loaded ' + id);
  return load.apply(this, arguments);
};
// bin/treecast compiles the bundle itself when it has a code cache: record that as a load too.
const vm = require('node:vm');
const Script = vm.Script;
vm.Script = class extends Script {
  constructor(code, options) {
    super(code, options);
    const cache = options?.cachedData === undefined ? 'none' : this.cachedDataRejected ? 'rejected' : 'accepted';
    process._rawDebug('loaded ' + options?.filename);
    process._rawDebug('compiled ' + options?.filename + ' cache ' + cache);
  }
};
`,
  );
  const r = spawnSync(process.execPath, ['--require', hook, binPath, ...args], { encoding: 'utf8', env: { ...process.env, TREECAST_STORE: store } });
  const modules = r.stderr
    .split('\n')
    .filter((l) => l.startsWith('loaded '))
    .map((l) => l.slice(7));
  const compiled = r.stderr
    .split('\n')
    .filter((l) => l.startsWith('compiled '))
    .map((l) => l.slice(9));
  return { stdout: r.stdout, status: r.status, modules, compiled };
}

const loads = (modules: string[], part: string) => modules.some((m) => m.includes(part));

/** What only the remote and archive commands use: the HTTP client and server, zlib. */
const REMOTE_AND_ARCHIVE = ['/node_modules/undici/', 'node:http', 'node:https', 'node:zlib'];

test('--version prints the version without loading the CLI or any command', () => {
  const store = join(tempDir(), 's');
  for (const flag of ['--version', '-V']) {
    const r = run([flag], store);
    assert.equal(r.status, 0);
    assert.equal(r.stdout, `${VERSION}\n`);
    assert.ok(loads(r.modules, `${distCli}version.js`), `${flag} did not load the version: ${r.modules.join(' ')}`);
    assert.ok(!loads(r.modules, `${distCli}main.js`), `${flag} loaded the CLI`);
  }
});

test('the CLI runs the bundle: no module of the tsc output is loaded', () => {
  const r = run(['--help'], join(tempDir(), 's'));
  assert.equal(r.status, 0);
  assert.ok(loads(r.modules, `${distCli}main.js`), `the bundle was not loaded: ${r.modules.join(' ')}`);
  assert.ok(!loads(r.modules, distSrc), `loaded from dist/src: ${r.modules.filter((m) => m.includes(distSrc)).join(' ')}`);
  // --help builds every command, so what the others must not load is loaded here: the hook sees it.
  for (const part of REMOTE_AND_ARCHIVE.filter((p) => p !== 'node:https')) assert.ok(loads(r.modules, part), `--help did not load ${part}`);
});

test('a command initializes its own code only: no HTTP client, server or zip code where unused', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  fs.mkdirSync(join(dir, 'src'));
  // More files than checkout writes inline, so it starts its worker threads, from the bundle's worker.js.
  for (let i = 0; i < 4500; i++) fs.writeFileSync(join(dir, 'src', `f${i}`), `f${i}`);
  const snap = run(['snapshot', join(dir, 'src'), '--ref', 'r'], store);
  assert.equal(snap.status, 0);
  const co = run(['checkout', 'r', join(dir, 'out'), '--jobs', '2'], store);
  assert.equal(co.status, 0);
  assert.equal(fs.readdirSync(join(dir, 'out')).length, 4500);
  assert.ok(loads(co.modules, `${distCli}worker.js`), `checkout started no worker from the bundle: ${co.modules.join(' ')}`);
  // A small tree (its pack says so) is checked out inline: no thread is started for it.
  fs.mkdirSync(join(dir, 'small'));
  for (let i = 0; i < 10; i++) fs.writeFileSync(join(dir, 'small', `f${i}`), `f${i}`);
  assert.equal(run(['snapshot', join(dir, 'small'), '--ref', 'small'], store).status, 0);
  const small = run(['checkout', 'small', join(dir, 'small-out'), '--jobs', '2'], store);
  assert.equal(small.status, 0);
  assert.equal(fs.readdirSync(join(dir, 'small-out')).length, 10);
  assert.ok(!loads(small.modules, `${distCli}worker.js`), 'a 10-file checkout started worker threads');
  const refs = run(['refs'], store);
  assert.equal(refs.status, 0);
  for (const [name, r] of [['snapshot', snap], ['checkout', co], ['refs', refs]] as const) {
    for (const unused of REMOTE_AND_ARCHIVE) assert.ok(!loads(r.modules, unused), `${name} loaded ${unused}`);
    assert.ok(!loads(r.modules, distSrc), `${name} loaded from dist/src`);
  }
});

test('the bundle is compiled from its code cache, which V8 accepts', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  fs.mkdirSync(join(dir, 'src'));
  fs.writeFileSync(join(dir, 'src', 'f'), 'f');
  for (const args of [['snapshot', join(dir, 'src'), '--ref', 'r'], ['ls', 'r'], ['refs'], ['--help']]) {
    const r = run(args, store);
    assert.equal(r.status, 0, args.join(' '));
    assert.deepEqual(r.compiled, [`${distCli}main.js cache accepted`], `${args.join(' ')}: ${r.compiled.join(', ')}`);
  }
});

/** bin/treecast and dist/cli copied to a temp dir, to be changed there (commander is bundled). */
function copiedCli(): { bin: string; mainJs: string } {
  const root = tempDir('tc-cli-copy');
  fs.cpSync(join(distCli, '..', '..', 'bin'), join(root, 'bin'), { recursive: true });
  fs.cpSync(distCli, join(root, 'dist', 'cli'), { recursive: true });
  return { bin: join(root, 'bin', 'treecast'), mainJs: join(root, 'dist', 'cli', 'main.js') };
}

test('a code cache made for another main.js is not used, even of the same length', () => {
  // V8 checks only the length of the source: without the hash check the old bytecode would run.
  const { bin: copy, mainJs } = copiedCli();
  const before = 'list a tree recursively';
  const after = 'LIST A TREE RECURSIVELY';
  const code = fs.readFileSync(mainJs, 'utf8');
  assert.ok(code.includes(before));
  fs.writeFileSync(mainJs, code.replace(before, after));
  const r = run(['ls', '--help'], join(tempDir(), 's'), copy);
  assert.equal(r.status, 0);
  assert.ok(r.stdout.includes(after), `the old code ran: ${r.stdout}`);
  assert.deepEqual(r.compiled, [], 'main.js was compiled with the stale cache');
  assert.ok(loads(r.modules, mainJs), `main.js was not loaded: ${r.modules.join(' ')}`);
});

test('a code cache V8 refuses (another V8, other flags, damaged) only costs the compile', () => {
  const { bin: copy, mainJs } = copiedCli();
  const cache = fs.readFileSync(`${mainJs}.cache`);
  fs.writeFileSync(`${mainJs}.cache`, Buffer.concat([cache.subarray(0, 64), Buffer.alloc(cache.length - 64, 7)]));
  const r = run(['ls', '--help'], join(tempDir(), 's'), copy);
  assert.equal(r.status, 0);
  assert.ok(r.stdout.includes('list a tree recursively'));
  assert.deepEqual(r.compiled, [`${mainJs} cache rejected`]);
  fs.rmSync(`${mainJs}.cache`);
  const none = run(['ls', '--help'], join(tempDir(), 's'), copy);
  assert.equal(none.status, 0);
  assert.ok(none.stdout.includes('list a tree recursively'));
  assert.ok(loads(none.modules, mainJs));
});
