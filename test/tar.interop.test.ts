/**
 * tar interoperability with the real programs: archives made by GNU tar (gnu and posix formats),
 * bsdtar, gzip, zstd (also as actions/cache makes them, with a 1 GiB window) and `npm pack` unpack
 * with treecast to the same tree (contents, modes, symlink targets, hardlinks, empty files and
 * directories, mtimes) and import to the digest `snapshot` gives that tree. Needs the Debian
 * packages tar, libarchive-tools (bsdtar), zstd and gzip.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { unpack } from '../src/archive/unpack.js';
import { importArchive } from '../src/archive/import.js';
import { snapshot } from '../src/capture/snapshot.js';
import { LocalStore } from '../src/store/local.js';
import { formatDigest } from '../src/core/digest.js';
import { scratchDir } from './helpers/zip-craft.js';
import { compareTrees, makeSampleTree } from './helpers/zip-trees.js';
import { makeTarSampleTree, sh } from './helpers/tar-trees.js';

function sameInode(root: string, a: string, b: string): boolean {
  return fs.statSync(join(root, a)).ino === fs.statSync(join(root, b)).ino;
}

async function snapshotDigest(dir: string, store: LocalStore): Promise<string> {
  return formatDigest((await snapshot(dir, { store, jobs: 0 })).digest);
}

test('archives from GNU tar (gnu, posix), bsdtar, gzip and zstd unpack to the same tree and import to the snapshot digest', async () => {
  const dir = scratchDir('tc-tar-interop');
  const src = join(dir, 'src');
  makeTarSampleTree(src);
  const store = LocalStore.open(join(dir, 'store'));
  const want = await snapshotDigest(src, store);
  const makers: [string, string][] = [
    ['gnu.tar', 'tar --format=gnu -cf OUT -C SRC .'],
    ['posix.tar', 'tar --format=posix -cf OUT -C SRC .'],
    ['bsdtar.tar', 'bsdtar -cf OUT -C SRC .'],
    ['bsdtar-pax.tar', 'bsdtar --format=pax -cf OUT -C SRC .'],
    ['gnu.tar.gz', 'tar -czf OUT -C SRC .'],
    ['gnu.tar.zst', 'tar --zstd -cf OUT -C SRC .'],
    ['piped.tar.zst', 'tar -cf - -C SRC . | zstd -T0 -3 -q -o OUT'],
    ['bsdtar.tar.gz', 'bsdtar -czf OUT -C SRC .'],
  ];
  for (const [name, cmd] of makers) {
    const archive = join(dir, name);
    sh(cmd.replace('OUT', archive).replace('SRC', src));
    const out = join(dir, `out-${name}`);
    await unpack(archive, out, { jobs: 2 });
    compareTrees(src, out, { symlinkTimes: true });
    assert.ok(sameInode(out, 'a.txt', 'deep/hard.txt'), `${name}: the hardlink is a hardlink`);
    const r = await importArchive(archive, store, { jobs: 0 });
    assert.equal(formatDigest(r.root), want, `${name}: import equals snapshot`);
  }
});

test('an actions/cache archive (tar --posix | zstd --long=30: a 1 GiB window) unpacks', async () => {
  const dir = scratchDir('tc-tar-interop');
  const src = join(dir, 'src');
  makeTarSampleTree(src);
  const archive = join(dir, 'cache.tzst');
  sh(`tar --posix -cf - -C ${src} . | zstd -T0 --long=30 -q -o ${archive}`);
  // The frame really declares a 1 GiB window: zstd without --long refuses it.
  const plain = spawnSync('zstd', ['-d', '-c', archive], { encoding: 'utf8' });
  assert.notEqual(plain.status, 0);
  assert.match(plain.stderr, /Window size larger than maximum|too much memory/);
  const out = join(dir, 'out');
  await unpack(archive, out, { jobs: 2 });
  compareTrees(src, out, { symlinkTimes: true });
});

test('an npm pack tarball imports with --strip-components 1 to the digest of its unpacked tree', async () => {
  const dir = scratchDir('tc-tar-interop');
  const pkg = join(dir, 'pkg');
  fs.mkdirSync(join(pkg, 'lib'), { recursive: true });
  fs.writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name: 'tc-sample', version: '1.2.3', bin: { 'tc-sample': 'bin.js' } }));
  fs.writeFileSync(join(pkg, 'bin.js'), '#!/usr/bin/env node\nconsole.log(1)\n');
  fs.chmodSync(join(pkg, 'bin.js'), 0o755);
  fs.writeFileSync(join(pkg, 'lib', 'index.js'), 'export default 42;\n');
  fs.writeFileSync(join(pkg, 'README.md'), '# sample\n');
  const tgz = sh(`npm pack --silent --pack-destination ${dir}`, pkg).trim().split('\n').pop()!;
  const archive = join(dir, tgz);
  const store = LocalStore.open(join(dir, 'store'));
  const out = join(dir, 'out');
  await unpack(archive, out, { jobs: 0, stripComponents: 1 });
  compareTrees(pkg, out, { symlinkTimes: false, times: false, modes: false });
  assert.equal(fs.statSync(join(out, 'bin.js')).mode & 0o111, 0o111, 'the executable stays executable');
  const r = await importArchive(archive, store, { jobs: 0, stripComponents: 1 });
  assert.equal(formatDigest(r.root), await snapshotDigest(out, store));
  // GNU tar agrees on what --strip-components 1 leaves. (npm tarballs have no directory entries, so
  // directory times are extraction times in both: only the files' times are compared.)
  const gnu = join(dir, 'gnu');
  fs.mkdirSync(gnu);
  sh(`tar -xzf ${archive} -C ${gnu} --strip-components 1`);
  compareTrees(gnu, out, { symlinkTimes: false, times: false });
  for (const f of ['package.json', 'bin.js', 'lib/index.js']) assert.equal(fs.statSync(join(out, f)).mtimeMs, fs.statSync(join(gnu, f)).mtimeMs, `${f}: mtime`);
});

test('--strip-components counts components as GNU tar does (./ included)', async () => {
  const dir = scratchDir('tc-tar-interop');
  const src = join(dir, 'src');
  makeSampleTree(src);
  const archive = join(dir, 'a.tar');
  sh(`tar -cf ${archive} -C ${dir} ./src`);
  for (const n of [1, 2, 3]) {
    const ours = join(dir, `ours-${n}`);
    const gnu = join(dir, `gnu-${n}`);
    fs.mkdirSync(gnu);
    sh(`tar -xf ${archive} -C ${gnu} --strip-components ${n}`);
    await unpack(archive, ours, { jobs: 0, stripComponents: n });
    compareTrees(gnu, ours, { symlinkTimes: true });
  }
});
