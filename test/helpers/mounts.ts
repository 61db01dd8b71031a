/**
 * Real filesystems for tests, made and removed by the test itself: a loop-mounted XFS with reflink,
 * and small or read-only tmpfs mounts. They need root; without it the caller skips with a message.
 */
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { tempDir } from './tmp.js';

export function canMount(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root to mount filesystems';
  return undefined;
}

export function hasCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Runs `fn` with a fresh reflink-capable XFS mounted at a temp dir; always unmounts. */
export async function withXfs<T>(fn: (mnt: string) => Promise<T>): Promise<T> {
  const dir = tempDir('tc-xfs');
  const img = join(dir, 'xfs.img');
  const mnt = join(dir, 'mnt');
  fs.mkdirSync(mnt);
  fs.closeSync(fs.openSync(img, 'w'));
  fs.truncateSync(img, 512 << 20);
  execFileSync('mkfs.xfs', ['-q', '-m', 'reflink=1', img]);
  execFileSync('mount', ['-o', 'loop', img, mnt]);
  try {
    return await fn(mnt);
  } finally {
    execFileSync('umount', [mnt]);
  }
}

/** Runs `fn` with a tmpfs of `size` (e.g. '512k') mounted at a temp dir, optionally read-only. */
export async function withTmpfs<T>(size: string, fn: (mnt: string) => Promise<T>, readOnly = false): Promise<T> {
  const mnt = join(tempDir('tc-tmpfs'), 'mnt');
  fs.mkdirSync(mnt);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}${readOnly ? ',ro' : ''}`, 'tmpfs', mnt]);
  try {
    return await fn(mnt);
  } finally {
    execFileSync('umount', [mnt]);
  }
}

/** True when `file` shares at least one extent with another file (a reflink), per FIEMAP. */
export function hasSharedExtents(file: string): boolean {
  return /\bshared\b/.test(execFileSync('filefrag', ['-v', file], { encoding: 'utf8' }));
}
