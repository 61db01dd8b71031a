/**
 * A copy of the built package that any user can run. A test that runs the CLI as another user
 * cannot use the clone in place when the clone lives in a directory only its owner can enter (a
 * home directory with mode 700): the copy lives in a world-readable temp dir instead.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './tmp.js';

const repo = new URL('../../../', import.meta.url).pathname;
let copied: string | undefined;

/** The path of `bin/treecast` in a world-readable copy of the package (made once per test file). */
export function publicBin(): string {
  if (copied) return copied;
  const root = tempDir('tc-pkg');
  fs.chmodSync(root, 0o755);
  for (const p of ['package.json', 'bin', join('dist', 'cli'), join('dist', 'src')]) fs.cpSync(join(repo, p), join(root, p), { recursive: true });
  // The runtime dependencies, and theirs.
  const todo = Object.keys(JSON.parse(fs.readFileSync(join(repo, 'package.json'), 'utf8')).dependencies ?? {});
  const seen = new Set<string>();
  while (todo.length > 0) {
    const name = todo.pop()!;
    if (seen.has(name)) continue;
    seen.add(name);
    const from = join(repo, 'node_modules', name);
    fs.cpSync(from, join(root, 'node_modules', name), { recursive: true });
    todo.push(...Object.keys(JSON.parse(fs.readFileSync(join(from, 'package.json'), 'utf8')).dependencies ?? {}));
  }
  // Readable and traversable by everyone, whatever the umask and the modes in the clone were.
  for (const e of fs.readdirSync(root, { recursive: true, withFileTypes: true })) {
    const p = join(e.parentPath, e.name);
    if (!e.isSymbolicLink()) fs.chmodSync(p, e.isDirectory() ? 0o755 : fs.statSync(p).mode | 0o444);
  }
  copied = join(root, 'bin', 'treecast');
  return copied;
}
