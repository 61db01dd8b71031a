/**
 * A closed stdout ends every command quietly, as in git: `treecast ls REF | head -1` exits 141
 * (128 + SIGPIPE) with nothing on stderr, through a real shell pipe.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { tempDir } from './helpers/tmp.js';

const bin = new URL('../../bin/treecast', import.meta.url).pathname;

/** Runs `treecast ARGS | READER` in bash with pipefail and returns treecast's exit status, stderr and what the reader printed. */
function piped(args: string[], reader: string, store: string): { status: number; stderr: string; stdout: string } {
  const dir = tempDir('tc-pipe');
  const errFile = join(dir, 'stderr');
  const quoted = [process.execPath, bin, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = spawnSync('bash', ['-c', `set -o pipefail; ${quoted} 2>'${errFile}' | ${reader}`], {
    env: { ...process.env, TREECAST_STORE: store },
    encoding: 'utf8',
  });
  return { status: r.status!, stderr: fs.readFileSync(errFile, 'utf8'), stdout: r.stdout };
}

test('ls, ls --json, diff, refs and blob get into a closed pipe exit 141 quietly', () => {
  const dir = tempDir('tc-pipe');
  const store = join(dir, 's');
  // Far more output than a pipe buffer (64 KiB) holds, so writes go on after the reader has gone.
  for (const side of ['a', 'b']) {
    for (let i = 0; i < 3000; i++) {
      const p = join(dir, side, `dir-${i % 30}`, `a-rather-long-file-name-to-fill-the-pipe-${i}`);
      fs.mkdirSync(join(p, '..'), { recursive: true });
      fs.writeFileSync(p, `${side}${i}`);
    }
  }
  fs.writeFileSync(join(dir, 'big'), Buffer.alloc(4 << 20, 7));
  const run = (args: string[]) => spawnSync(process.execPath, [bin, ...args], { env: { ...process.env, TREECAST_STORE: store }, encoding: 'utf8' });
  assert.equal(run(['snapshot', join(dir, 'a'), '--ref', 'a']).status, 0);
  assert.equal(run(['snapshot', join(dir, 'b'), '--ref', 'b']).status, 0);
  for (let i = 0; i < 2000; i++) fs.writeFileSync(join(store, 'refs', `r${i}`), fs.readFileSync(join(store, 'refs', 'a')));
  const blob = run(['blob', 'put', join(dir, 'big')]).stdout.trim();

  const cases: [string[], string][] = [
    [['ls', 'a'], 'head -1'],
    [['ls', 'a', '--json'], 'head -c100'],
    [['diff', 'a', 'b'], 'head -1'],
    [['diff', 'a', 'b', '--json'], 'head -c10'],
    [['refs'], 'head -1'],
    [['blob', 'get', blob], 'head -c10'],
  ];
  for (const [args, reader] of cases) {
    const r = piped(args, reader, store);
    assert.equal(r.stderr, '', `${args.join(' ')} | ${reader}: nothing on stderr`);
    assert.equal(r.status, 141, `${args.join(' ')} | ${reader}`);
    assert.ok(r.stdout.length > 0, 'the reader got the first part');
  }
  // A reader that takes everything sees the whole output and exit 0.
  const all = piped(['ls', 'a'], 'wc -l', store);
  assert.equal(all.status, 0, all.stderr);
  assert.equal(Number(all.stdout.trim()), 3030);
});

test('pack to stdout into a closed pipe exits 141 quietly in every format, through the compressor too', () => {
  const dir = tempDir('tc-pipe');
  const store = join(dir, 's');
  // Incompressible bytes, so every format's output is far larger than a pipe buffer.
  const src = join(dir, 'src');
  fs.mkdirSync(src);
  const noise = Buffer.alloc(3 << 20);
  for (let i = 0; i < noise.length; i += 4) noise.writeUInt32LE((Math.imul(i, 2654435761) ^ (i >>> 7)) >>> 0, i);
  for (let i = 0; i < 4; i++) fs.writeFileSync(join(src, `f${i}`), noise.subarray(i * 1024));
  const tree = spawnSync(process.execPath, [bin, 'snapshot', src, '--ref', 't'], { env: { ...process.env, TREECAST_STORE: store }, encoding: 'utf8' });
  assert.equal(tree.status, 0, tree.stderr);
  for (const source of [src, 't']) {
    for (const format of ['tar', 'tar.gz', 'tar.zst', 'zip']) {
      // Several times: whether the compressor or treecast meets the closed pipe first is a race.
      for (let round = 0; round < 2; round++) {
        const r = piped(['pack', source, '-', '--format', format], 'head -c10', store);
        assert.equal(r.stderr, '', `pack ${source === src ? 'DIR' : 'REF'} - --format ${format} | head: nothing on stderr`);
        assert.equal(r.status, 141, `pack ${format}`);
        assert.equal(r.stdout.length, 10);
      }
    }
  }
});

test('pack to stdout into a pipe whose reader is slow waits for it: the whole archive, exit 0, in every format', () => {
  const dir = tempDir('tc-pipe');
  const store = join(dir, 's');
  const src = join(dir, 'src');
  fs.mkdirSync(src);
  const noise = Buffer.alloc(2 << 20);
  for (let i = 0; i < noise.length; i += 4) noise.writeUInt32LE((Math.imul(i, 2654435761) ^ (i >>> 9)) >>> 0, i);
  fs.writeFileSync(join(src, 'f'), noise);
  const tree = spawnSync(process.execPath, [bin, 'snapshot', src, '--ref', 't'], { env: { ...process.env, TREECAST_STORE: store }, encoding: 'utf8' });
  assert.equal(tree.status, 0, tree.stderr);
  for (const source of [src, 't']) {
    for (const format of ['zip', 'tar', 'tar.gz', 'tar.zst']) {
      const out = join(dir, `out.${format}`);
      const r = piped(['pack', source, '-', '--format', format], `(sleep 0.5; cat > '${out}')`, store);
      assert.equal(r.status, 0, `pack ${source === src ? 'DIR' : 'REF'} - --format ${format} | slow reader: ${r.stderr}`);
      const back = join(dir, `back-${format}-${source === src ? 'dir' : 'ref'}`);
      const u = spawnSync(process.execPath, [bin, 'unpack', out, back], { env: { ...process.env, TREECAST_STORE: store }, encoding: 'utf8' });
      assert.equal(u.status, 0, u.stderr);
      assert.ok(fs.readFileSync(join(back, 'f')).equals(noise), `${format}: the archive is whole`);
    }
  }
});
