/** Seeded random file trees for round-trip tests: files (empty, text, binary, executable), dirs, symlinks. */
import * as fs from 'node:fs';
import { join } from 'node:path';

/** mulberry32: small, fast, reproducible. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NAMES = ['a', 'b', 'src', 'lib', 'README.md', 'x.c', 'Z', 'é', '日本', 'space name', '-dash', '.hidden', 'long-'.repeat(10)];

export function makeRandomTree(root: string, seed: number, opts: { files?: number; maxDepth?: number } = {}): void {
  const r = rng(seed);
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)]!;
  const dirs = [root];
  fs.mkdirSync(root, { recursive: true });
  const count = opts.files ?? 60;
  for (let i = 0; i < count; i++) {
    const parent = pick(dirs);
    const name = `${pick(NAMES)}${i}`;
    const p = join(parent, name);
    const roll = r();
    if (roll < 0.15 && p.split('/').length - root.split('/').length < (opts.maxDepth ?? 6)) {
      fs.mkdirSync(p);
      dirs.push(p);
    } else if (roll < 0.22) {
      fs.symlinkSync(r() < 0.5 ? `../${name}-target` : `sub/${i}`, p);
    } else if (roll < 0.28) {
      fs.writeFileSync(p, '');
    } else {
      const size = r() < 0.1 ? Math.floor(r() * 300_000) : Math.floor(r() * 2000);
      const buf = Buffer.alloc(size);
      for (let j = 0; j < size; j++) buf[j] = Math.floor(r() * 256);
      fs.writeFileSync(p, buf);
      if (r() < 0.2) fs.chmodSync(p, 0o755);
    }
  }
  if (r() < 0.5) fs.mkdirSync(join(root, `empty-dir-${seed}`));
}

/** Changes about `fraction` of the files of a tree: rewrites, deletes, adds, flips exec bits, retypes. */
export function mutateTree(root: string, seed: number, fraction: number): void {
  const r = rng(seed);
  const all: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      all.push(p);
      if (e.isDirectory()) walk(p);
    }
  };
  walk(root);
  for (const p of all) {
    if (r() > fraction || !fs.lstatSync(p, { throwIfNoEntry: false })) continue;
    const st = fs.lstatSync(p);
    const roll = r();
    if (st.isDirectory()) {
      if (roll < 0.3) fs.rmSync(p, { recursive: true });
      else fs.writeFileSync(join(p, `added-${Math.floor(r() * 1e6)}`), `new ${roll}`);
    } else if (st.isSymbolicLink()) {
      fs.rmSync(p);
      if (roll < 0.6) fs.symlinkSync(`retargeted-${Math.floor(roll * 100)}`, p);
    } else if (roll < 0.3) fs.rmSync(p);
    else if (roll < 0.5) fs.writeFileSync(p, `changed ${roll}`);
    else if (roll < 0.6 && st.isFile()) fs.chmodSync(p, st.mode & 0o100 ? 0o644 : 0o755);
    else if (roll < 0.7) {
      fs.rmSync(p);
      fs.mkdirSync(p);
      fs.writeFileSync(join(p, 'inside'), 'was a file');
    } else if (roll < 0.8) {
      fs.rmSync(p);
      fs.symlinkSync('retyped-target', p);
    } else fs.writeFileSync(`${p}-sibling`, 'sibling');
  }
}
