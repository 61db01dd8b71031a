/**
 * Symlinks with any target survive pack -> unpack and pack -> import -> checkout (a Python venv
 * links bin/python3 to an absolute path; pnpm's node_modules is made of relative links), while no
 * link is ever followed or written through; --safe-links refuses absolute and escaping targets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { describeTree, tempDir } from './helpers/tmp.js';
import { craftZip, listTree } from './helpers/zip-craft.js';

const bin = new URL('../../bin/treecast', import.meta.url).pathname;
const fixtures = new URL('../../test/fixtures/', import.meta.url).pathname;

function tc(args: string[], store: string) {
  const r = spawnSync(process.execPath, [bin, ...args], { env: { ...process.env, TREECAST_STORE: store }, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** pack DIR -> unpack, and pack DIR -> import -> checkout: both must give DIR back exactly, links verbatim. */
function roundTrip(dir: string, work: string): void {
  const store = join(work, 'store');
  const zip = join(work, 'tree.zip');
  const p = tc(['pack', dir, zip], store);
  assert.equal(p.code, 0, p.err);
  const u = tc(['unpack', zip, join(work, 'unpacked')], store);
  assert.equal(u.code, 0, u.err);
  assert.deepEqual(describeTree(join(work, 'unpacked')), describeTree(dir), 'unpack gives the tree back');
  const i = tc(['import', zip], store);
  assert.equal(i.code, 0, i.err);
  const digest = i.out.trim();
  assert.equal(tc(['snapshot', dir], store).out.trim(), digest, 'import gives the digest snapshot gives');
  const c = tc(['checkout', digest, join(work, 'checked-out')], store);
  assert.equal(c.code, 0, c.err);
  assert.deepEqual(describeTree(join(work, 'checked-out')), describeTree(dir), 'checkout of the import gives the tree back');
}

test('symlinks with absolute and escaping targets are kept by default; --safe-links refuses them (exit 6)', () => {
  const work = tempDir('tc-links');
  const store = join(work, 'store');
  const zip = join(work, 'a.zip');
  const links: [string, string][] = [['abs', '/usr/bin/python3'], ['up', '../../elsewhere'], ['sub/deep', '../../..'], ['win', 'C:\\Windows'], ['climb', 'x/../../y']];
  fs.writeFileSync(zip, craftZip([{ name: 'sub/' }, ...links.map(([name, data]) => ({ name, data, mode: 0o120777 }))]));
  const out = join(work, 'out');
  const r = tc(['unpack', zip, out], store);
  assert.equal(r.code, 0, r.err);
  for (const [name, target] of links) assert.equal(fs.readlinkSync(join(out, name)), target, name);
  const i = tc(['import', zip, '--json'], store);
  assert.equal(i.code, 0, i.err);
  const ls = tc(['ls', JSON.parse(i.out).digest, '--json'], store);
  assert.deepEqual((JSON.parse(ls.out) as { path: string; target?: string }[]).filter((e) => e.target).map((e) => [e.path, e.target]).sort(), [...links].sort());

  const safe = tc(['unpack', zip, join(work, 'safe'), '--safe-links'], store);
  assert.equal(safe.code, 6, safe.err);
  assert.match(safe.err, /error\[ERR_TREECAST_UNSAFE_PATH\]: archive entry 'abs': symlink target '\/usr\/bin\/python3' is absolute/);
  assert.equal(fs.existsSync(join(work, 'safe')), false, 'nothing written');
  const safeImport = tc(['import', zip, '--safe-links'], store);
  assert.equal(safeImport.code, 6, safeImport.err);
});

test('a link is never followed or written through, whatever its target', () => {
  const work = tempDir('tc-links');
  const store = join(work, 'store');
  const victim = join(work, 'victim');
  fs.mkdirSync(victim);
  const zip = join(work, 'a.zip');
  // An entry under an absolute link of the archive: refused before anything is written.
  fs.writeFileSync(zip, craftZip([{ name: 'd', data: victim, mode: 0o120777 }, { name: 'd/evil', data: 'pwned' }]));
  const r = tc(['unpack', zip, join(work, 'out')], store);
  assert.equal(r.code, 6, r.err);
  assert.match(r.err, /'d\/evil': lies under 'd', which is a symlink/);
  // A link already in the target where the archive has a directory: refused, with or without --force.
  fs.writeFileSync(zip, craftZip([{ name: 'd/evil', data: 'pwned' }]));
  fs.mkdirSync(join(work, 'out2'));
  fs.symlinkSync(victim, join(work, 'out2', 'd'));
  for (const extra of [[], ['--force']]) assert.equal(tc(['unpack', zip, join(work, 'out2'), ...extra], store).code, 6);
  // A link already in the target where the archive has a file: replaced with --force, not written through.
  fs.writeFileSync(join(victim, 'f'), 'victim');
  fs.writeFileSync(zip, craftZip([{ name: 'f', data: 'archive' }]));
  fs.mkdirSync(join(work, 'out3'));
  fs.symlinkSync(join(victim, 'f'), join(work, 'out3', 'f'));
  assert.equal(tc(['unpack', zip, join(work, 'out3'), '--force'], store).code, 0);
  assert.equal(fs.readFileSync(join(work, 'out3', 'f'), 'utf8'), 'archive');
  assert.deepEqual(listTree(victim), ['f']);
  assert.equal(fs.readFileSync(join(victim, 'f'), 'utf8'), 'victim');
});

test('a real Python venv round-trips through pack/unpack and import/checkout, and still runs', () => {
  const work = tempDir('tc-venv');
  const venv = join(work, 'venv');
  const made = spawnSync('python3', ['-m', 'venv', '--without-pip', venv], { encoding: 'utf8' });
  assert.equal(made.status, 0, `python3 -m venv (Debian package python3-venv): ${made.stderr}`);
  const python = fs.readlinkSync(join(venv, 'bin', 'python3'));
  assert.ok(python.startsWith('/'), `bin/python3 links to an absolute path (${python})`);
  roundTrip(venv, work);
  const r = spawnSync(join(work, 'unpacked', 'bin', 'python'), ['-c', 'import sys; print(sys.prefix)'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), join(work, 'unpacked'), 'the unpacked venv is a working venv of its own');
  const safe = tc(['unpack', join(work, 'tree.zip'), join(work, 'safe'), '--safe-links'], join(work, 'store'));
  assert.equal(safe.code, 6);
  assert.match(safe.err, /archive entry 'bin\/python3?': symlink target '\/[^']+' is absolute/);
});

test('a pnpm node_modules (installed from the registry by pnpm 9 from a committed lockfile) round-trips', () => {
  const work = tempDir('tc-pnpm');
  const project = join(work, 'project');
  fs.mkdirSync(project);
  for (const f of ['package.json', 'pnpm-lock.yaml']) fs.copyFileSync(join(fixtures, 'pnpm-project', f), join(project, f));
  // Every cache pnpm and npx keep stays inside the test's temp dir.
  const home = join(work, 'home');
  fs.mkdirSync(home);
  const env = {
    ...process.env,
    HOME: home,
    XDG_CACHE_HOME: join(home, '.cache'),
    XDG_DATA_HOME: join(home, '.local', 'share'),
    XDG_STATE_HOME: join(home, '.local', 'state'),
    XDG_CONFIG_HOME: join(home, '.config'),
    npm_config_cache: join(home, '.npm'),
    npm_config_update_notifier: 'false',
  };
  const install = spawnSync('npx', ['--yes', 'pnpm@9', 'install', '--frozen-lockfile', '--store-dir', join(home, 'pnpm-store')], { cwd: project, env, encoding: 'utf8' });
  assert.equal(install.status, 0, `pnpm install (needs the npm registry): ${install.stdout}\n${install.stderr}`);
  const nm = join(project, 'node_modules');
  const tree = describeTree(nm);
  assert.ok(tree.filter((l) => l.startsWith('L ')).length >= 8, 'node_modules is made of symlinks');
  assert.ok(tree.some((l) => l === 'L chalk -> .pnpm/chalk@4.1.2/node_modules/chalk'), tree.join('\n'));
  roundTrip(nm, work);
  const r = spawnSync(process.execPath, ['-e', 'console.log(require("is-odd")(3), typeof require("chalk").red)'], { cwd: join(work, 'unpacked', '..'), env: { ...env, NODE_PATH: join(work, 'unpacked') }, encoding: 'utf8' });
  assert.equal(r.stdout.trim(), 'true function', r.stderr);
});
