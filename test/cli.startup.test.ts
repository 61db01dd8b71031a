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
function run(args: string[], store: string): { stdout: string; status: number | null; modules: string[] } {
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
`,
  );
  const r = spawnSync(process.execPath, ['--require', hook, bin, ...args], { encoding: 'utf8', env: { ...process.env, TREECAST_STORE: store } });
  const modules = r.stderr
    .split('\n')
    .filter((l) => l.startsWith('loaded '))
    .map((l) => l.slice(7));
  return { stdout: r.stdout, status: r.status, modules };
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
