/**
 * Running the CLI as an unprivileged user (root bypasses permission checks, so EACCES needs
 * another uid). The built package is copied, with its runtime dependencies, into a world-readable
 * temp dir, so this works wherever the project lives (a clone under /root is not readable by others).
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from './tmp.js';

/** The uid and gid of `nobody` on Debian. */
export const NOBODY = { uid: 65534, gid: 65534 };

const projectRoot = fileURLToPath(new URL('../../../', import.meta.url));
let copied: string | undefined;

/** Path of a `bin/treecast` any user can run (made once per test file). */
export function publicBin(): string {
  if (copied) return copied;
  const root = tempDir('tc-public');
  fs.chmodSync(root, 0o755);
  for (const p of ['package.json', 'bin', 'dist/src']) fs.cpSync(join(projectRoot, p), join(root, p), { recursive: true });
  const copyDeps = (pkgDir: string) => {
    const deps = Object.keys((JSON.parse(fs.readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> }).dependencies ?? {});
    for (const d of deps) {
      const to = join(root, 'node_modules', d);
      if (fs.existsSync(to)) continue;
      fs.cpSync(join(projectRoot, 'node_modules', d), to, { recursive: true });
      copyDeps(to);
    }
  };
  copyDeps(projectRoot);
  fs.chmodSync(root, 0o755);
  copied = join(root, 'bin', 'treecast');
  return copied;
}

/** Makes `dir` and its ancestors up to the temp root enterable by any user (mkdtemp makes them 0700). */
export function openToAll(...dirs: string[]): void {
  for (const d of dirs) fs.chmodSync(d, 0o755);
}
