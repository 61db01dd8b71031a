/** The sample tree tar archives must carry (zip's, plus a hardlink and long names), and a shell runner. */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { makeSampleTree } from './zip-trees.js';

export function sh(cmd: string, cwd?: string): string {
  const r = spawnSync('sh', ['-c', cmd], { cwd, encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, `${cmd} failed: ${r.stderr}${r.stdout.slice(-2000)}`);
  return r.stdout;
}

/** The zip sample tree plus what tar adds: a hardlink, names past ustar's 100 and 255 bytes. */
export function makeTarSampleTree(root: string): void {
  makeSampleTree(root);
  const long = join(root, 'long', 'd'.repeat(120), 'e'.repeat(150));
  fs.mkdirSync(long, { recursive: true });
  fs.writeFileSync(join(long, `${'f'.repeat(200)}.txt`), 'a long path\n');
  fs.symlinkSync(`${'f'.repeat(200)}.txt`, join(long, 'long-link'));
  fs.linkSync(join(root, 'a.txt'), join(root, 'deep', 'hard.txt'));
  for (const p of [join(long, `${'f'.repeat(200)}.txt`), long, join(long, '..'), join(root, 'long'), join(root, 'deep')]) fs.utimesSync(p, 1_700_000_000, 1_700_000_000);
  fs.lutimesSync(join(long, 'long-link'), 1_700_000_001, 1_700_000_001);
}

