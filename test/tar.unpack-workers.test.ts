/**
 * tar unpack's worker threads make the directories, hardlinks and symlinks as well as the files: a
 * crafted archive whose directories are named after the files under them, or never, whose
 * hardlinks chain (a link to a link) and whose links and symlinks live in directories nothing else
 * implies, with many batches in flight over shared buffers, unpacks to what GNU tar makes of it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { unpack } from '../src/archive/unpack.js';
import { dirMetaPlan } from '../src/archive/tar-unpack.js';
import { scratchDir } from './helpers/zip-craft.js';
import { compareTrees } from './helpers/zip-trees.js';
import { craftTar, type TarCraftEntry } from './helpers/tar-craft.js';
import { sh } from './helpers/tar-trees.js';
import { rng } from './helpers/random-tree.js';
import { publicBin } from './helpers/public-package.js';

test('directories, hardlink chains and symlinks made by the workers unpack as GNU tar unpacks them', async () => {
  const dir = scratchDir('tc-tar-workers');
  const rand = rng(9);
  const entries: TarCraftEntry[] = [];
  // 3,000 files in 60 directories (about 30 MB: a dozen 8 MiB batches, so buffers are reused while
  // others are in flight). Directories 0-19 are named before their files, 20-39 after them (mode
  // 0700, so a wrong order of mode and contents shows), 40-59 never.
  for (let i = 0; i < 3000; i++) {
    const d = i % 60;
    if (d < 20 && i < 60) entries.push({ name: `tree/d${d}/`, type: '5', mode: 0o750, mtime: 1_500_000_000 + d });
    entries.push({ name: `tree/d${d}/sub/f${i}`, data: randomBytes(Math.floor(rand() * 20_000)), mode: i % 7 === 0 ? 0o755 : 0o644, mtime: 1_600_000_000 + i });
  }
  for (let d = 20; d < 40; d++) entries.push({ name: `tree/d${d}/`, type: '5', mode: 0o700, mtime: 1_400_000_000 + d });
  // A chain of hardlinks, each naming the one before, in directories only the links imply.
  entries.push({ name: 'links/f', data: 'linked', mode: 0o640, mtime: 1_650_000_000 });
  for (let i = 1; i <= 200; i++) entries.push({ name: `links/k${i % 9}/h${i}`, type: '1', linkname: i === 1 ? 'links/f' : `links/k${(i - 1) % 9}/h${i - 1}` });
  // Symlinks in directories only they imply, and empty directories after the last file.
  for (let i = 0; i < 100; i++) entries.push({ name: `sl/x${i % 5}/y/s${i}`, type: '2', linkname: `../../../tree/d${i % 60}/sub`, mtime: 1_620_000_000 + i });
  // A file larger than a batch buffer (streamed on its own), then empty directories: no batch
  // follows them, so the tail makes them.
  entries.push({ name: 'big/nine-mib', data: randomBytes(9 << 20), mode: 0o600, mtime: 1_660_000_000 });
  for (let i = 0; i < 5; i++) entries.push({ name: `empty/e${i}/`, type: '5', mode: 0o705, mtime: 1_450_000_000 + i });
  const explicit = new Set(entries.filter((e) => e.type === '5').map((e) => e.name.slice(0, -1)));
  const archive = join(dir, 'crafted.tar');
  fs.writeFileSync(archive, craftTar(entries));

  const theirs = join(dir, 'gnu');
  fs.mkdirSync(theirs);
  sh(`tar -xf ${archive} -C ${theirs}`);
  for (const a of [archive, `${archive}.zst`]) {
    if (a.endsWith('.zst')) sh(`zstd -q ${archive} -o ${a}`);
    const ours = join(dir, `ours-${a.slice(-3)}`);
    // The archive is over 4 MiB, so unpack runs two worker threads.
    await unpack(a, ours, { jobs: 2 });
    // Directories no entry names get the time they were made: set them alike before comparing.
    for (const root of [theirs, ours]) touchImpliedDirs(root, '', explicit);
    compareTrees(theirs, ours, { symlinkTimes: true });
    const first = fs.statSync(join(ours, 'links/f'));
    assert.equal(first.nlink, 201);
    for (let i = 1; i <= 200; i++) assert.equal(fs.statSync(join(ours, `links/k${i % 9}/h${i}`)).ino, first.ino, `h${i} is links/f`);
    assert.equal(fs.readlinkSync(join(ours, 'sl/x3/y/s3')), '../../../tree/d3/sub');
    assert.equal((fs.statSync(join(ours, 'tree/d25')).mode & 0o777).toString(8), '700');
    assert.equal(fs.readdirSync(join(ours, 'empty')).length, 5);
    assert.deepEqual(fs.readdirSync(ours).sort(), ['big', 'empty', 'links', 'sl', 'tree'], 'no staging directory is left');
  }
});

function touchImpliedDirs(root: string, rel: string, explicit: Set<string>): void {
  for (const e of fs.readdirSync(join(root, rel), { withFileTypes: true })) {
    if (!e.isDirectory()) continue;
    const p = rel === '' ? e.name : `${rel}/${e.name}`;
    touchImpliedDirs(root, p, explicit);
    if (!explicit.has(p)) fs.utimesSync(join(root, p), 1_000_000_000, 1_000_000_000);
  }
}

test('directory modes that forbid entering are set deepest first, split across the workers, as a user other than root', { skip: process.getuid?.() !== 0 && 'needs root to run the command as another user' }, async () => {
  const dir = scratchDir('tc-tar-dirmeta');
  fs.chmodSync(dir, 0o755);
  const out = join(dir, 'out');
  fs.mkdirSync(out);
  fs.chownSync(out, 65534, 65534);
  // Twelve trees whose top directory can be read but not entered (0600), each with directories
  // under it: a child set after its parent would be out of reach (EACCES) for a non-root user.
  // First at the top level, then all under one directory that cannot be entered either, which is
  // split below it (its subtrees across the workers, itself after them).
  for (const under of ['', 'one/']) {
    const entries: TarCraftEntry[] = [];
    if (under) entries.push({ name: under, type: '5', mode: 0o600, mtime: 1_490_000_000 });
    for (let t = 0; t < 12; t++) {
      entries.push({ name: `${under}t${t}/`, type: '5', mode: 0o600, mtime: 1_500_000_000 + t });
      for (let i = 0; i < 5; i++) {
        entries.push({ name: `${under}t${t}/c${i}/`, type: '5', mode: 0o700, mtime: 1_510_000_000 + i });
        entries.push({ name: `${under}t${t}/c${i}/g/`, type: '5', mode: 0o500, mtime: 1_520_000_000 + i });
        entries.push({ name: `${under}t${t}/c${i}/g/f`, data: `${t}-${i}`, mtime: 1_530_000_000 });
      }
    }
    // Over 4 MiB, so two workers run and the trees are split between them.
    entries.push({ name: 'big/five-mib', data: randomBytes(5 << 20) });
    const archive = join(dir, `modes${under ? '-under' : ''}.tar`);
    fs.writeFileSync(archive, craftTar(entries), { mode: 0o644 });
    const target = join(out, under ? 'y' : 'x');
    const r = spawnSync(process.execPath, [publicBin(), 'unpack', '--jobs', '2', archive, target], { uid: 65534, gid: 65534, encoding: 'utf8', env: { ...process.env, TREECAST_STORE: join(out, 'store') } });
    assert.equal(r.status, 0, r.stderr);
    // Entered as root, which the modes do not stop.
    for (const e of entries.filter((e) => e.type === '5')) {
      const st = fs.statSync(join(target, e.name));
      assert.equal((st.mode & 0o777).toString(8), e.mode!.toString(8), `${e.name} mode`);
      assert.equal(st.mtimeMs / 1000, e.mtime, `${e.name} mtime`);
    }
    assert.equal(fs.readFileSync(join(target, `${under}t11/c4/g/f`), 'utf8'), '11-4');
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('directory modes are planned as disjoint subtrees, deepest first, with the tops of split subtrees after them', () => {
  const rand = rng(17);
  const isUnder = (a: string, b: string) => a.startsWith(`${b}/`);
  const shapes: string[][] = [];
  // Random trees: one or a few top-level directories, of random depth and fan-out.
  for (let s = 0; s < 40; s++) {
    const paths = new Set<string>();
    const tops = s % 3 === 0 ? ['only'] : ['a', 'b', 'c'].slice(0, 1 + (s % 3));
    for (let i = 0; i < 300; i++) {
      let p = tops[Math.floor(rand() * tops.length)]!;
      const deep = 1 + Math.floor(rand() * 5);
      for (let d = 0; d < deep; d++) {
        if (rand() < 0.8) paths.add(p); // some directories only implied
        p += `/${Math.floor(rand() * (d === 0 ? 30 : 3))}`;
      }
      paths.add(p);
    }
    shapes.push([...paths].sort(() => rand() - 0.5));
  }
  // node_modules as pnpm lays it out: one '.pnpm' over hundreds of packages.
  const pnpm = ['.pnpm'];
  for (let i = 0; i < 400; i++) pnpm.push(`.pnpm/p${i}`, `.pnpm/p${i}/node_modules`, `.pnpm/p${i}/node_modules/p${i}`, `.pnpm/p${i}/node_modules/p${i}/lib`);
  shapes.push(pnpm);
  for (const paths of shapes) {
    for (const n of [1, 2, 3]) {
      const plan = dirMetaPlan(paths.map((path) => ({ path })), n);
      const all = [...plan.parts.flat(), ...plan.above].map((d) => d.path);
      assert.deepEqual([...all].sort(), [...paths].sort(), 'every directory once');
      assert.ok(plan.parts.length <= n);
      const partOf = new Map<string, number>();
      plan.parts.forEach((part, i) => part.forEach((d) => partOf.set(d.path, i)));
      for (const [a, i] of partOf) {
        for (const [b, j] of partOf) if (i !== j) assert.ok(!isUnder(a, b), `${a} (part ${i}) lies under ${b} (part ${j})`);
        for (const b of plan.above) assert.ok(!isUnder(b.path, a), `${b.path} waits for the parts but lies under ${a}`);
      }
      for (const list of [...plan.parts, plan.above]) {
        list.forEach((d, i) => {
          for (const later of list.slice(i + 1)) assert.ok(!isUnder(later.path, d.path), `${later.path} comes after ${d.path}, above it`);
        });
      }
    }
  }
  // The pnpm layout is split below '.pnpm', evenly, with '.pnpm' itself last.
  const plan = dirMetaPlan(pnpm.map((path) => ({ path })), 2);
  assert.deepEqual(plan.above.map((d) => d.path), ['.pnpm']);
  assert.deepEqual(plan.parts.map((p) => p.length), [800, 800]);
});
