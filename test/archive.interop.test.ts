/**
 * Archives treecast writes pass `unzip -t` and list correctly in `zipinfo`, and unpack with Info-ZIP
 * unzip to the same tree; archives from Info-ZIP `zip -r -y` and from yazl unpack with treecast to
 * the same tree (contents, modes, symlinks, times). Needs the Debian `zip` and `unzip` packages.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { pack } from '../src/archive/pack.js';
import { unpack } from '../src/archive/unpack.js';
import { ZipWriter } from '../src/archive/zip-writer.js';
import { readCentralDirectory } from '../src/archive/central-directory.js';
import { scratchDir } from './helpers/zip-craft.js';
import { compareTrees, makeSampleTree } from './helpers/zip-trees.js';

function run(cmd: string, args: string[], cwd?: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed: ${r.stderr}${r.stdout.slice(-2000)}`);
  return r.stdout;
}

test('treecast zips pass unzip -t, list modes/symlinks/times in zipinfo, and unzip to the same tree', async () => {
  const dir = scratchDir();
  const src = join(dir, 'src');
  makeSampleTree(src);
  for (const level of ['default', 'store'] as const) {
    const zip = join(dir, `t-${level}.zip`);
    // Files over 100 kB go through the large-file path, in 64 kB pieces.
    const r = await pack({ dir: src }, zip, { level, jobs: 2, largeBytes: 100_000, chunkBytes: 65_536 });
    assert.equal(r.files, 9);
    assert.match(run('unzip', ['-t', zip]), /No errors detected/);
    const info = run('zipinfo', ['-T', zip]);
    assert.match(info, /^-rwxr-xr-x +3\.0 unx +\d+ .* bin\/run\.sh$/m);
    assert.match(info, /^lrwxrwxrwx +3\.0 unx +5 .* ln$/m);
    assert.match(info, /^drwx------ +3\.0 unx +0 .* private\/$/m);
    assert.match(info, /^-r--r--r-- .* ro\.txt$/m);
    assert.match(info, new RegExp(`${level === 'store' ? 'stor' : 'defN'} .* comp\\.txt$`, 'm'));
    // Incompressible data is stored even at the default level.
    assert.match(info, /stor .* random\.bin$/m);
    const out = join(dir, `unzipped-${level}`);
    fs.mkdirSync(out);
    run('unzip', ['-q', zip, '-d', out]);
    compareTrees(src, out, { symlinkTimes: false });
  }
});

test('Info-ZIP zip -r -y archives unpack to the same tree', async () => {
  const dir = scratchDir();
  const src = join(dir, 'src');
  makeSampleTree(src);
  for (const flags of [['-r', '-y'], ['-r', '-y', '-0']]) {
    const zip = join(dir, `z${flags.length}.zip`);
    run('zip', ['-q', ...flags, zip, '.'], src);
    const out = join(dir, `out${flags.length}`);
    const r = await unpack(zip, out, { jobs: 2, largeEntryBytes: 100_000 });
    assert.equal(r.symlinks, 3);
    compareTrees(src, out, { symlinkTimes: true });
  }
});

test('yazl archives unpack to the same contents, modes and times', async () => {
  const require = createRequire(import.meta.url);
  const yazl = require('yazl') as {
    ZipFile: new () => {
      addBuffer(b: Buffer, name: string, o?: object): void;
      addEmptyDirectory(name: string, o?: object): void;
      end(): void;
      outputStream: NodeJS.ReadableStream;
    };
  };
  const dir = scratchDir();
  const zip = join(dir, 'y.zip');
  const z = new yazl.ZipFile();
  const mtime = new Date(1_650_000_000_000);
  z.addBuffer(Buffer.from('hello yazl\n'.repeat(100)), 'a/hello.txt', { mtime, mode: 0o100640 });
  z.addBuffer(Buffer.from('#!/bin/sh\n'), 'a/run', { mtime, mode: 0o100755, compress: false });
  z.addBuffer(Buffer.from('hello.txt'), 'a/link', { mtime, mode: 0o120777, compress: false });
  z.addEmptyDirectory('empty', { mtime, mode: 0o40750 });
  z.end();
  await new Promise<void>((res, rej) => z.outputStream.pipe(fs.createWriteStream(zip)).on('close', res).on('error', rej));
  const out = join(dir, 'out');
  await unpack(zip, out, { jobs: 0 });
  assert.equal(fs.readFileSync(join(out, 'a/hello.txt'), 'utf8'), 'hello yazl\n'.repeat(100));
  assert.equal(fs.statSync(join(out, 'a/hello.txt')).mode & 0o7777, 0o640);
  assert.equal(fs.statSync(join(out, 'a/run')).mode & 0o7777, 0o755);
  assert.equal(fs.readlinkSync(join(out, 'a/link')), 'hello.txt');
  assert.equal(fs.statSync(join(out, 'empty')).mode & 0o7777, 0o750);
  assert.equal(Math.floor(fs.statSync(join(out, 'a/hello.txt')).mtimeMs / 1000), 1_650_000_000);
});

test('Zip64: more than 65,535 entries pass unzip -t and read back', () => {
  const dir = scratchDir();
  const zip = join(dir, 'many.zip');
  const fd = fs.openSync(zip, 'w');
  const w = new ZipWriter(fd, zip);
  const n = 70_000;
  for (let i = 0; i < n; i++) w.add({ name: `d${i % 100}/e${i}/`, mode: 0o040755, mtime: 1_600_000_000, method: 0, crc: 0, compressedSize: 0, size: 0 });
  w.finish();
  fs.closeSync(fd);
  assert.match(run('unzip', ['-tq', zip]), /No errors detected/);
  const rfd = fs.openSync(zip, 'r');
  try {
    const cd = readCentralDirectory(rfd, zip);
    assert.equal(cd.entries.length, n);
    assert.equal(cd.entries[n - 1]!.name, `d${(n - 1) % 100}/e${n - 1}/`);
  } finally {
    fs.closeSync(rfd);
  }
});
