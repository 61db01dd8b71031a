/**
 * Builds zip bytes by hand for tests, including hostile ones: any name, mode, method, sizes and
 * CRC may be overridden, local headers may disagree with the central directory, and central
 * entries may point at another entry's local data. Deliberately independent of src/archive.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';

export interface CraftEntry {
  name: string;
  /** Uncompressed content (a symlink's target for symlinks). */
  data?: Buffer | string;
  /** Full st_mode; default regular file 0644 (dirs: name ends in '/', mode 040755). */
  mode?: number;
  /** Host byte of "version made by" (3 = unix, 0 = MS-DOS). */
  host?: number;
  method?: 0 | 8;
  mtime?: number;
  /** Overrides of what the central directory says. */
  size?: number;
  compressedSize?: number;
  crc?: number;
  externalAttr?: number;
  /** Overrides of what the local header says. */
  localName?: string;
  localCrc?: number;
  localMethod?: number;
  /** Bytes placed as the entry's data instead of the real (compressed) data. */
  rawData?: Buffer;
  /** Writes no local data: the central entry points at entry N's local header. */
  sameOffsetAs?: number;
  /** Adds this many to the central local-header offset. */
  offsetDelta?: number;
}

function dosTime(sec: number): { date: number; time: number } {
  const d = new Date(sec * 1000);
  return { date: ((d.getFullYear() - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate(), time: (d.getHours() << 11) | (d.getMinutes() << 5) | (d.getSeconds() >> 1) };
}

export function craftZip(entries: CraftEntry[]): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  const offsets: number[] = [];
  let pos = 0;
  for (const e of entries) {
    const isDir = e.name.endsWith('/');
    const data = Buffer.from(e.data ?? '');
    const method = e.method ?? (data.length > 0 ? 8 : 0);
    const packed = e.rawData ?? (method === 8 ? zlib.deflateRawSync(data) : data);
    const crc = zlib.crc32(data) >>> 0;
    const name = Buffer.from(e.name);
    const mtime = e.mtime ?? 1_600_000_000;
    const { date, time } = dosTime(mtime);
    const ut = Buffer.alloc(9);
    ut.writeUInt16LE(0x5455, 0);
    ut.writeUInt16LE(5, 2);
    ut[4] = 1;
    ut.writeUInt32LE(mtime, 5);
    let offset: number;
    if (e.sameOffsetAs !== undefined) offset = offsets[e.sameOffsetAs]!;
    else {
      offset = pos;
      const lname = Buffer.from(e.localName ?? e.name);
      const l = Buffer.alloc(30);
      l.writeUInt32LE(0x04034b50, 0);
      l.writeUInt16LE(20, 4);
      l.writeUInt16LE(0, 6);
      l.writeUInt16LE(e.localMethod ?? method, 8);
      l.writeUInt16LE(time, 10);
      l.writeUInt16LE(date, 12);
      l.writeUInt32LE(e.localCrc ?? e.crc ?? crc, 14);
      l.writeUInt32LE(e.compressedSize ?? packed.length, 18);
      l.writeUInt32LE(e.size ?? data.length, 22);
      l.writeUInt16LE(lname.length, 26);
      l.writeUInt16LE(ut.length, 28);
      parts.push(l, lname, ut, packed);
      pos += 30 + lname.length + ut.length + packed.length;
    }
    offsets.push(offset);
    const mode = e.mode ?? (isDir ? 0o040755 : 0o100644);
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(((e.host ?? 3) << 8) | 30, 4);
    c.writeUInt16LE(20, 6);
    c.writeUInt16LE(0, 8);
    c.writeUInt16LE(method, 10);
    c.writeUInt16LE(time, 12);
    c.writeUInt16LE(date, 14);
    c.writeUInt32LE(e.crc ?? crc, 16);
    c.writeUInt32LE(e.compressedSize ?? packed.length, 20);
    c.writeUInt32LE(e.size ?? data.length, 24);
    c.writeUInt16LE(name.length, 28);
    c.writeUInt16LE(ut.length, 30);
    c.writeUInt32LE(e.externalAttr ?? (((mode << 16) | (isDir ? 0x10 : 0)) >>> 0), 38);
    c.writeUInt32LE(offset + (e.offsetDelta ?? 0), 42);
    central.push(c, name, ut);
  }
  const cd = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(entries.length, 8);
  eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(pos, 16);
  return Buffer.concat([...parts, cd, eocd]);
}

const made: string[] = [];
after(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

/** A temp directory removed after the test file, even when tests fail. */
export function scratchDir(tag = 'tc-zip'): string {
  const d = fs.mkdtempSync(join(tmpdir(), `${tag}-`));
  made.push(d);
  return d;
}

/** Every path below `root` (relative, sorted), with a trailing '/' for directories and '@' for symlinks. */
export function listTree(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, rel: string) => {
    for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
      const r = rel + d.name;
      if (d.isDirectory()) {
        out.push(`${r}/`);
        walk(join(dir, d.name), `${r}/`);
      } else out.push(d.isSymbolicLink() ? `${r}@` : r);
    }
  };
  if (fs.existsSync(root)) walk(root, '');
  return out.sort();
}
