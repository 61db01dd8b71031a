/**
 * PathKinds (entry-rules.ts), which refuses an archive entry that names a path twice or lies under
 * a file or symlink of the archive. It keeps a map of names per directory and skips the parent
 * checks while entries stay in one directory; here it must accept and refuse exactly as a plain
 * model does (one map of every path, every parent checked for every entry), with the same
 * messages, the same kinds for every path afterwards and the same count of implied directories,
 * on random entry sequences in and out of directory order, with and without case folding.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PathKinds, foldName } from '../src/archive/entry-rules.js';

type Kind = 'file' | 'dir' | 'symlink' | 'implied';

/** The rules, stated plainly. */
class Model {
  readonly kinds = new Map<string, Kind>();
  implied = 0;
  constructor(private readonly fold?: (p: string) => string) {}
  get(p: string): Kind | undefined {
    return this.kinds.get(this.fold ? this.fold(p) : p);
  }
  add(raw: string, type: 'file' | 'dir' | 'symlink', shown: string): void {
    const path = this.fold ? this.fold(raw) : raw;
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      const k = this.kinds.get(parent);
      if (k === undefined) {
        this.kinds.set(parent, 'implied');
        this.implied++;
      } else if (k !== 'dir' && k !== 'implied') throw new Error(`archive entry '${shown}': lies under '${parent}', which is a ${k} in this archive`);
    }
    const prev = this.kinds.get(path);
    if (prev === 'implied') {
      if (type !== 'dir') throw new Error(`archive entry '${shown}': is a ${type}, but earlier entries lie under it as a directory`);
      this.implied--;
    } else if (prev !== undefined) throw new Error(`archive entry '${shown}': duplicate entry (${prev} and ${type})`);
    this.kinds.set(path, type);
  }
}

function outcome(f: () => void): string | undefined {
  try {
    f();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

test('path kinds accept and refuse random entry sequences exactly as the plain model does', () => {
  let seed = 2024;
  const rand = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const names = ['a', 'b', 'A', 'c.txt', 'e\u0301', '\u00e9'];
  const randomPath = () => {
    const depth = 1 + rand(4);
    return Array.from({ length: depth }, () => names[rand(names.length)]!).join('/');
  };
  const types = ['file', 'dir', 'symlink'] as const;
  let refused = 0;
  let accepted = 0;
  for (let round = 0; round < 3000; round++) {
    const fold = round % 3 === 0 ? foldName : undefined;
    const real = new PathKinds(fold);
    const model = new Model(fold);
    // Runs of entries in one directory (as tar -c writes them) mixed with jumps anywhere.
    let dir = '';
    const steps = 1 + rand(30);
    for (let i = 0; i < steps; i++) {
      let path: string;
      if (dir !== '' && rand(3) > 0) path = `${dir}/${names[rand(names.length)]}`;
      else {
        path = randomPath();
        dir = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
      }
      const type = types[rand(3)]!;
      const want = outcome(() => model.add(path, type, path));
      const got = outcome(() => real.add(path, type, path));
      assert.equal(got, want, `round ${round}, step ${i}: ${type} '${path}'`);
      if (want !== undefined) {
        refused++;
        break; // a refusal ends the archive
      }
      accepted++;
      assert.equal(real.implied, model.implied, `round ${round}, step ${i}: implied directories`);
      for (let k = 0; k < 4; k++) {
        const q = randomPath();
        assert.equal(real.get(q), model.get(q), `round ${round}, step ${i}: kind of '${q}'`);
      }
    }
  }
  // Both outcomes must have been exercised many times.
  assert.ok(refused > 500 && accepted > 5000, `refused ${refused}, accepted ${accepted}`);
});
