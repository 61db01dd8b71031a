/**
 * Names on disk that are not valid UTF-8. Trees only hold UTF-8 names, so such an entry is always
 * one the tree lacks (untracked); it still has to be listed, removed by its real bytes and shown
 * without pretending U+FFFD is its name. Inside the planner a path is a string, so a byte name is
 * carried as a key that no real name can be: NUL (never in a file name) and the bytes in hex.
 */
import * as fs from 'node:fs';
import { escapeControl } from '../core/display.js';

const BYTE_KEY = '\0';

/** The planner's key for a directory entry name as readdir gave it in bytes. */
export function nameKey(raw: Buffer): string {
  const s = raw.toString('utf8');
  // Only a string holding U+FFFD can have lost bytes; a real U+FFFD round-trips.
  if (!s.includes('\ufffd') || Buffer.from(s, 'utf8').equals(raw)) return s;
  return BYTE_KEY + raw.toString('hex');
}

/** The path to hand to the file system for `root` + `rel`: a Buffer when a segment is a byte name. */
export function diskPath(root: string, rel: string): string | Buffer {
  const p = rel === '' ? root : `${root}/${rel}`;
  if (!rel.includes(BYTE_KEY)) return p;
  return Buffer.concat(p.split('/').map((seg, i) => Buffer.concat([i > 0 ? Buffer.from('/') : Buffer.alloc(0), seg.startsWith(BYTE_KEY) ? Buffer.from(seg.slice(1), 'hex') : Buffer.from(seg)])));
}

/** `rel` for people: byte names shown with their invalid bytes escaped as \xNN (see core/display.ts). */
export function displayPath(rel: string): string {
  if (!rel.includes(BYTE_KEY)) return rel;
  return rel
    .split('/')
    .map((seg) => (seg.startsWith(BYTE_KEY) ? escapeControl(Buffer.from(seg.slice(1), 'hex')) : seg))
    .join('/');
}

/** The bytes decode to themselves: valid UTF-8, a name or target Node reads without loss. */
export function isUtf8Bytes(raw: Buffer): boolean {
  return Buffer.from(raw.toString('utf8')).equals(raw);
}

/**
 * For `name`, holding U+FFFD as readdir of `dirAbs` gave it: the raw bytes of the entry Node decoded
 * lossily to it, or undefined when it is a real U+FFFD (a walker asks only for a name holding one).
 */
export function lossyEntryName(dirAbs: string, name: string): Buffer | undefined {
  for (const raw of fs.readdirSync(dirAbs, { encoding: 'buffer' })) if (raw.toString('utf8') === name && !isUtf8Bytes(raw)) return raw;
  return undefined;
}

/** The raw target of symlink `path` when it is not valid UTF-8 (the string Node gave lost bytes). */
export function lossyLinkTarget(path: string): Buffer | undefined {
  const raw = fs.readlinkSync(path, { encoding: 'buffer' });
  return isUtf8Bytes(raw) ? undefined : raw;
}
