/** Temp directories that are removed after the test, even when it fails. */
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';

const made: string[] = [];
after(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

export function tempDir(tag = 'tc'): string {
  const d = fs.mkdtempSync(join(tmpdir(), `${tag}-`));
  made.push(d);
  return d;
}

/** Makes a file tree from a compact spec: 'path' -> text | {exec} | {link} | {dir}. */
export type Spec = Record<string, string | { text: string; exec: true } | { link: string } | { dir: true } | { bytes: Buffer }>;

export function writeTree(root: string, spec: Spec): void {
  fs.mkdirSync(root, { recursive: true });
  for (const [rel, v] of Object.entries(spec)) {
    const p = join(root, rel);
    fs.mkdirSync(join(p, '..'), { recursive: true });
    if (typeof v === 'string') fs.writeFileSync(p, v);
    else if ('dir' in v) fs.mkdirSync(p, { recursive: true });
    else if ('link' in v) fs.symlinkSync(v.link, p);
    else if ('bytes' in v) fs.writeFileSync(p, v.bytes);
    else {
      fs.writeFileSync(p, v.text);
      fs.chmodSync(p, 0o755);
    }
  }
}

/** Everything under root as a sorted list of 'type path detail' lines, for whole-tree comparisons. */
export function describeTree(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, rel: string) => {
    for (const name of fs.readdirSync(dir).sort()) {
      const p = join(dir, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(p);
      if (st.isSymbolicLink()) out.push(`L ${r} -> ${fs.readlinkSync(p)}`);
      else if (st.isDirectory()) {
        out.push(`D ${r}`);
        walk(p, r);
      } else out.push(`F ${r} ${(st.mode & 0o100) !== 0 ? 'x' : '-'} ${fs.readFileSync(p).toString('base64')}`);
    }
  };
  walk(root, '');
  return out;
}

/** Waits long enough that the next file change is not "racy" for stat caches. */
export function settle(ms = 120): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
