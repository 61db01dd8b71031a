/** A sample tree with every kind of entry archives must carry, and a strict tree comparison. */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const T = 1_600_000_000;

/** Files (text, executable, read-only, empty, compressible, random, unicode name), symlinks (to a file, a directory, dangling), directories (empty, private). */
export function makeSampleTree(root: string): void {
  const files: [string, string | Buffer, number][] = [
    ['a.txt', 'hello archive\n', 0o644],
    ['bin/run.sh', '#!/bin/sh\necho hi\n', 0o755],
    ['deep/x/y/z.txt', 'deep\n', 0o644],
    ['empty', '', 0o644],
    ['comp.txt', 'compressible line of text\n'.repeat(8000), 0o644],
    ['random.bin', randomBytes(150_000), 0o644],
    ['ro.txt', 'read only\n', 0o444],
    ['ünï-名前.txt', 'unicode name\n', 0o600],
    ['private/secret', 'secret\n', 0o600],
  ];
  fs.mkdirSync(root, { recursive: true });
  for (const [rel, data, mode] of files) {
    fs.mkdirSync(join(root, rel, '..'), { recursive: true });
    fs.writeFileSync(join(root, rel), data);
    fs.chmodSync(join(root, rel), mode);
  }
  fs.mkdirSync(join(root, 'emptydir'));
  fs.symlinkSync('a.txt', join(root, 'ln'));
  fs.symlinkSync('deep/x', join(root, 'dirlink'));
  fs.symlinkSync('nowhere', join(root, 'deep/dangling'));
  fs.chmodSync(join(root, 'private'), 0o700);
  // Distinct times, set deepest first so setting a child does not change its directory's time.
  let i = 0;
  const stamp = (dir: string) => {
    for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, d.name);
      if (d.isDirectory()) stamp(p);
      const t = T + 1000 * ++i;
      if (d.isSymbolicLink()) fs.lutimesSync(p, t, t);
      else fs.utimesSync(p, t, t);
    }
  };
  stamp(root);
}

interface Node {
  type: 'file' | 'dir' | 'symlink';
  mode: number;
  mtime: number;
  data?: string;
}

function scan(root: string): Map<string, Node> {
  const out = new Map<string, Node>();
  const walk = (dir: string, rel: string) => {
    for (const name of fs.readdirSync(dir)) {
      const p = join(dir, name);
      const r = rel + name;
      const st = fs.lstatSync(p);
      const mtime = Math.floor(st.mtimeMs / 1000);
      if (st.isSymbolicLink()) out.set(r, { type: 'symlink', mode: 0, mtime, data: fs.readlinkSync(p) });
      else if (st.isDirectory()) {
        out.set(r, { type: 'dir', mode: st.mode & 0o7777, mtime });
        walk(p, `${r}/`);
      } else out.set(r, { type: 'file', mode: st.mode & 0o7777, mtime, data: fs.readFileSync(p).toString('base64') });
    }
  };
  walk(root, '');
  return out;
}

/** Same paths, types, contents, symlink targets, modes and mtimes (symlink mtimes optional). */
export function compareTrees(a: string, b: string, opts: { symlinkTimes: boolean; times?: boolean; modes?: boolean }): void {
  const x = scan(a);
  const y = scan(b);
  assert.deepEqual([...y.keys()].sort(), [...x.keys()].sort(), 'same paths');
  for (const [p, n] of x) {
    const m = y.get(p)!;
    assert.equal(m.type, n.type, `${p}: type`);
    assert.equal(m.data, n.data, `${p}: contents`);
    if (opts.modes !== false && n.type !== 'symlink') assert.equal(m.mode.toString(8), n.mode.toString(8), `${p}: mode`);
    if (opts.times !== false && (n.type !== 'symlink' || opts.symlinkTimes)) assert.equal(m.mtime, n.mtime, `${p}: mtime`);
  }
}
