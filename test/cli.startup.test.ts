/**
 * Start-up: each command loads only the modules it uses (a resolve hook lists every module the
 * real `bin/treecast` loads), and `--version` is answered before the CLI is loaded at all.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { VERSION } from '../src/version.js';
import { tempDir } from './helpers/tmp.js';

const bin = new URL('../../bin/treecast', import.meta.url).pathname;

/** Runs bin/treecast with a module hook; returns its stdout, exit code and the modules it loaded. */
function run(args: string[], store: string): { stdout: string; status: number | null; modules: string[] } {
  const dir = tempDir('tc-startup');
  const hook = join(dir, 'hook.mjs');
  fs.writeFileSync(
    hook,
    `import { register } from 'node:module';\nregister('data:text/javascript,' + encodeURIComponent('export async function resolve(s, c, n) { const r = await n(s, c); process._rawDebug("loaded " + r.url); return r; }'));\n`,
  );
  const r = spawnSync(process.execPath, ['--import', hook, bin, ...args], { encoding: 'utf8', env: { ...process.env, TREECAST_STORE: store } });
  const modules = r.stderr
    .split('\n')
    .filter((l) => l.startsWith('loaded '))
    .map((l) => l.slice(7));
  return { stdout: r.stdout, status: r.status, modules };
}

const loads = (modules: string[], part: string) => modules.some((m) => m.includes(part));

test('--version prints the version without loading the CLI or any command', () => {
  const store = join(tempDir(), 's');
  for (const flag of ['--version', '-V']) {
    const r = run([flag], store);
    assert.equal(r.status, 0);
    assert.equal(r.stdout, `${VERSION}\n`);
    assert.ok(!loads(r.modules, 'commander'), `${flag} loaded commander: ${r.modules.join(' ')}`);
    assert.ok(!loads(r.modules, '/cli/commands/'), `${flag} loaded a command`);
  }
});

test('a command loads its own module graph only: no HTTP client, server or zip code where unused', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  fs.mkdirSync(join(dir, 'src'));
  fs.writeFileSync(join(dir, 'src', 'f'), 'f');
  const snap = run(['snapshot', join(dir, 'src'), '--ref', 'r'], store);
  assert.equal(snap.status, 0);
  const co = run(['checkout', 'r', join(dir, 'out')], store);
  assert.equal(co.status, 0);
  const refs = run(['refs'], store);
  assert.equal(refs.status, 0);
  for (const [name, r] of [['snapshot', snap], ['checkout', co], ['refs', refs]] as const) {
    const unusedModules = ['undici', '/remote/client', '/remote/server', '/remote/fetch', '/remote/push', '/archive/', 'node:http', 'node:zlib', '/cli/commands/remote', '/cli/commands/archive'];
    for (const unused of unusedModules) {
      assert.ok(!loads(r.modules, unused), `${name} loaded ${unused}`);
    }
    assert.ok(loads(r.modules, `/cli/commands/${name === 'refs' ? 'inspect' : name}.js`), `${name} loaded its command file`);
  }
});
