/**
 * Reads a zip's central directory: the end record (Zip64 when present), then every central header,
 * in one read. This is the random-access index unpack and import work from: each entry says where
 * its local header lies, so workers can read and inflate entries independently.
 *
 * Strict by design: the end record must be the last thing in the file, the central directory must
 * end exactly where the end record (or Zip64 end record) begins, every header must be complete, and
 * multi-disk, encrypted and unknown-method archives are refused. Anything else is an ArchiveError.
 */
import * as fs from 'node:fs';
import { ArchiveError, fsError } from '../errors.js';
import { preadFully } from './local-data.js';
import { escapeControl } from '../core/display.js';
import {
  CENTRAL_HEADER_SIZE,
  EOCD_SIZE,
  EXTRA_TIMESTAMP,
  EXTRA_ZIP64,
  SIG_CENTRAL,
  SIG_EOCD,
  SIG_ZIP64_EOCD,
  SIG_ZIP64_LOCATOR,
  U16_MAX,
  U32_MAX,
  ZIP64_EOCD_SIZE,
  ZIP64_LOCATOR_SIZE,
  forEachExtra,
  fromDosDateTime,
} from './zip-format.js';

/** One central-directory header, decoded but not yet judged (see entry-rules.ts). */
export interface RawEntry {
  /** Position in the central directory, from 0. */
  index: number;
  /** The name as stored, decoded as UTF-8 (undefined when the bytes are not UTF-8). */
  name: string | undefined;
  nameLength: number;
  /** The stored name's bytes, kept only when they are not UTF-8 (for the error naming the entry). */
  badNameBytes?: Buffer;
  madeBy: number;
  flags: number;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  localOffset: number;
  externalAttr: number;
  /** Unix seconds: the extended-timestamp mtime when present, else the DOS time. */
  mtime: number;
}

export interface CentralDirectory {
  entries: RawEntry[];
  /** Offset of the first central header: no entry's data may reach past it. */
  cdOffset: number;
  fileSize: number;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function readAt(fd: number, pos: number, len: number, path: string): Buffer {
  const buf = Buffer.allocUnsafe(len);
  preadFully(fd, buf, len, pos, path);
  return buf;
}

function bad(path: string, why: string): ArchiveError {
  return new ArchiveError(`${path}: ${why}`, { path, hint: 'the archive is damaged, truncated or not a zip file' });
}

/**
 * Asks readCentralDirectory for its first `entries` headers as soon as they are decoded, before the
 * rest are: `use` gets a CentralDirectory whose `entries` is that prefix (the whole list when the
 * archive has no more). The directory may still be refused after `use` ran.
 */
export interface CentralPrefix {
  entries: number;
  use: (cd: CentralDirectory) => void;
  /** Called once all headers are read (after `use`), before the caller judges them. */
  whole?: (cd: CentralDirectory) => void;
}

export function readCentralDirectory(fd: number, path: string, prefix?: CentralPrefix): CentralDirectory {
  let fileSize: number;
  try {
    fileSize = fs.fstatSync(fd).size;
  } catch (e) {
    throw fsError(e, 'cannot stat archive', path);
  }
  if (fileSize < EOCD_SIZE) throw bad(path, `not a zip archive or truncated (${fileSize} bytes, no end of central directory record)`);
  const tailLen = Math.min(fileSize, EOCD_SIZE + U16_MAX);
  const tailPos = fileSize - tailLen;
  const tail = readAt(fd, tailPos, tailLen, path);
  // The end record is the last one whose comment runs exactly to the end of the file.
  let eocd = -1;
  for (let p = tailLen - EOCD_SIZE; p >= 0; p--) {
    if (tail.readUInt32LE(p) === SIG_EOCD && p + EOCD_SIZE + tail.readUInt16LE(p + 20) === tailLen) {
      eocd = p;
      break;
    }
  }
  if (eocd < 0) throw bad(path, 'not a zip archive or truncated (no end of central directory record at the end of the file)');
  const eocdPos = tailPos + eocd;
  const disk = tail.readUInt16LE(eocd + 4);
  const cdDisk = tail.readUInt16LE(eocd + 6);
  let count = tail.readUInt16LE(eocd + 10);
  const countOnDisk = tail.readUInt16LE(eocd + 8);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  let cdEnd = eocdPos;

  const locPos = eocdPos - ZIP64_LOCATOR_SIZE;
  const hasLocator = locPos >= 0 && readAt(fd, locPos, 4, path).readUInt32LE(0) === SIG_ZIP64_LOCATOR;
  if (hasLocator) {
    const loc = readAt(fd, locPos, ZIP64_LOCATOR_SIZE, path);
    const z64Pos = readU64(loc, 8, path);
    if (loc.readUInt32LE(4) !== 0 || loc.readUInt32LE(16) > 1) throw bad(path, 'multi-disk archives are not supported');
    if (z64Pos + ZIP64_EOCD_SIZE > locPos) throw bad(path, 'Zip64 end record lies outside the archive');
    const z = readAt(fd, z64Pos, ZIP64_EOCD_SIZE, path);
    if (z.readUInt32LE(0) !== SIG_ZIP64_EOCD) throw bad(path, 'Zip64 locator points at no Zip64 end record');
    if (z64Pos + 12 + readU64(z, 4, path) !== locPos) throw bad(path, 'Zip64 end record size disagrees with its position');
    if (z.readUInt32LE(16) !== 0 || z.readUInt32LE(20) !== 0) throw bad(path, 'multi-disk archives are not supported');
    const n64 = readU64(z, 32, path);
    if (readU64(z, 24, path) !== n64) throw bad(path, 'multi-disk archives are not supported');
    if (count !== U16_MAX && count !== n64) throw bad(path, 'entry counts of the end records disagree');
    count = n64;
    cdSize = readU64(z, 40, path);
    cdOffset = readU64(z, 48, path);
    cdEnd = z64Pos;
  } else if (disk !== 0 || cdDisk !== 0 || countOnDisk !== count) {
    throw bad(path, 'multi-disk archives are not supported');
  }
  if (cdOffset + cdSize !== cdEnd) {
    throw bad(path, `central directory (offset ${cdOffset}, ${cdSize} bytes) does not end where the end record starts (${cdEnd})`);
  }
  if (count * CENTRAL_HEADER_SIZE > cdSize) throw bad(path, `${count} entries cannot fit in a ${cdSize}-byte central directory`);

  const cd = readAt(fd, cdOffset, cdSize, path);
  const entries: RawEntry[] = new Array(count);
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + CENTRAL_HEADER_SIZE > cdSize || cd.readUInt32LE(p) !== SIG_CENTRAL) throw bad(path, `central header ${i} is missing or damaged`);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    const end = p + CENTRAL_HEADER_SIZE + nameLen + extraLen + commentLen;
    if (end > cdSize) throw bad(path, `central header ${i} runs past the central directory`);
    const nameBytes = cd.subarray(p + CENTRAL_HEADER_SIZE, p + CENTRAL_HEADER_SIZE + nameLen);
    let name: string | undefined;
    try {
      name = utf8.decode(nameBytes);
    } catch {
      name = undefined;
    }
    const shown = name ?? escapeControl(nameBytes);
    let size = cd.readUInt32LE(p + 24);
    let compressedSize = cd.readUInt32LE(p + 20);
    let localOffset = cd.readUInt32LE(p + 42);
    const diskStart = cd.readUInt16LE(p + 34);
    // Perf: the DOS time (a Date in local time) only when no extended timestamp gives the mtime
    // (0.07 s of the serial prefix on the Linux tree, profiled).
    let mtime = -1;
    let z64Bad = false;
    const extraOk = forEachExtra(cd, p + CENTRAL_HEADER_SIZE + nameLen, p + CENTRAL_HEADER_SIZE + nameLen + extraLen, (id, s, e) => {
      if (id === EXTRA_ZIP64) {
        // Only the fields whose 32-bit slot holds 0xFFFFFFFF are present, in this order.
        let q = s;
        const take = (): number => {
          if (q + 8 > e) {
            z64Bad = true;
            return 0;
          }
          const v = readU64(cd, q, path);
          q += 8;
          return v;
        };
        if (size === U32_MAX) size = take();
        if (compressedSize === U32_MAX) compressedSize = take();
        if (localOffset === U32_MAX) localOffset = take();
      } else if (id === EXTRA_TIMESTAMP && e - s >= 5 && (cd[s]! & 1) !== 0) {
        mtime = cd.readUInt32LE(s + 1);
      }
    });
    if (!extraOk) throw bad(path, `entry '${shown}': malformed extra field`);
    if (z64Bad) throw bad(path, `entry '${shown}': Zip64 extra field is too short`);
    if (mtime < 0) mtime = fromDosDateTime(cd.readUInt16LE(p + 14), cd.readUInt16LE(p + 12));
    if (diskStart !== 0 && diskStart !== U16_MAX) throw bad(path, 'multi-disk archives are not supported');
    entries[i] = {
      index: i,
      name,
      nameLength: nameLen,
      // Perf: no Buffer view per entry (83,730 on the Linux tree) for names that decoded; a view
      // keeps the central directory buffer alive with it.
      badNameBytes: name === undefined ? Buffer.from(nameBytes) : undefined,
      madeBy: cd.readUInt16LE(p + 4),
      flags: cd.readUInt16LE(p + 8),
      method: cd.readUInt16LE(p + 10),
      crc: cd.readUInt32LE(p + 16),
      compressedSize,
      size,
      localOffset,
      externalAttr: cd.readUInt32LE(p + 38),
      mtime,
    };
    p = end;
    if (prefix !== undefined && i + 1 === prefix.entries && i + 1 < count) prefix.use({ entries: entries.slice(0, i + 1), cdOffset, fileSize });
  }
  if (p !== cdSize) throw bad(path, `central directory has ${cdSize - p} bytes after its ${count} entries`);
  const whole = { entries, cdOffset, fileSize };
  if (prefix !== undefined && !(prefix.entries < count)) prefix.use(whole);
  prefix?.whole?.(whole);
  return whole;
}

function readU64(buf: Buffer, off: number, path: string): number {
  const v = buf.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(path, 'a 64-bit size or offset is out of range');
  return Number(v);
}
