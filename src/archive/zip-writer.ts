/**
 * Writes a zip sequentially: local header + data per entry (sizes and CRC known up front, so no
 * data descriptors), then the central directory and the end records, Zip64 ones when an entry
 * count, size or offset does not fit 16/32 bits. Every entry carries a unix mode (made-by = unix)
 * and an extended-timestamp mtime, as Info-ZIP's zip does, so unzip and zipinfo show modes,
 * symlinks and times. Small writes are gathered in one buffer and flushed in large writes.
 */
import * as fs from 'node:fs';
import { fsError } from '../errors.js';
import {
  CENTRAL_HEADER_SIZE,
  DOS_DIR_ATTR,
  EOCD_SIZE,
  EXTRA_TIMESTAMP,
  EXTRA_ZIP64,
  FLAG_UTF8,
  LOCAL_HEADER_SIZE,
  S_IFDIR,
  S_IFMT,
  SIG_CENTRAL,
  SIG_EOCD,
  SIG_LOCAL,
  SIG_ZIP64_EOCD,
  SIG_ZIP64_LOCATOR,
  U16_MAX,
  U32_MAX,
  VERSION_MADE_BY,
  VERSION_NEEDED,
  VERSION_NEEDED_ZIP64,
  ZIP64_EOCD_SIZE,
  ZIP64_LOCATOR_SIZE,
  toDosDateTime,
} from './zip-format.js';
import { openFile } from '../fs/open-file.js';
import { writeAll } from './tar-writer.js';

export interface EntryHeader {
  /** Name in the archive; directories end in '/'. */
  name: string;
  /** Full st_mode (type and permission bits). */
  mode: number;
  /** Unix seconds. */
  mtime: number;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
}

const FLUSH_AT = 4 << 20;

export class ZipWriter {
  private buf = Buffer.allocUnsafe(FLUSH_AT + (1 << 16));
  private used = 0;
  private offset = 0;
  private central = Buffer.allocUnsafe(1 << 20);
  private centralUsed = 0;
  private count = 0;

  constructor(
    private readonly fd: number,
    private readonly path: string,
  ) {}

  /** Bytes written so far (the archive's size once finished). */
  get size(): number {
    return this.offset + this.used;
  }

  /** Adds an entry whose (already compressed) data is `data`. */
  add(h: EntryHeader, data?: Uint8Array): void {
    this.header(h);
    if (data && data.length > 0) this.write(data);
  }

  /** Adds an entry whose data is the first `h.compressedSize` bytes of the file `src`. */
  addFromFile(h: EntryHeader, src: string): void {
    this.header(h);
    this.flush();
    const fd = openFile(src, 'r', 'cannot read');
    try {
      const chunk = Buffer.allocUnsafe(4 << 20);
      let pos = 0;
      while (pos < h.compressedSize) {
        const n = fs.readSync(fd, chunk, 0, Math.min(chunk.length, h.compressedSize - pos), pos);
        if (n === 0) throw new Error(`${src} is shorter than expected`);
        this.writeOut(chunk.subarray(0, n));
        pos += n;
      }
    } catch (e) {
      throw fsError(e, 'cannot copy', src);
    } finally {
      fs.closeSync(fd);
    }
  }

  private header(h: EntryHeader): void {
    const name = Buffer.from(h.name);
    const localOffset = this.size;
    const big = h.size >= U32_MAX || h.compressedSize >= U32_MAX;
    const { date, time } = toDosDateTime(h.mtime);
    const flags = name.length !== h.name.length ? FLAG_UTF8 : 0;
    const mtime32 = Math.max(0, Math.min(U32_MAX, Math.floor(h.mtime)));
    const needed = big || localOffset >= U32_MAX ? VERSION_NEEDED_ZIP64 : VERSION_NEEDED;

    // Local header: Zip64 sizes when either size needs them (then both must be present).
    const localExtra = 9 + (big ? 20 : 0);
    const l = Buffer.allocUnsafe(LOCAL_HEADER_SIZE + name.length + localExtra);
    l.writeUInt32LE(SIG_LOCAL, 0);
    l.writeUInt16LE(needed, 4);
    l.writeUInt16LE(flags, 6);
    l.writeUInt16LE(h.method, 8);
    l.writeUInt16LE(time, 10);
    l.writeUInt16LE(date, 12);
    l.writeUInt32LE(h.crc >>> 0, 14);
    l.writeUInt32LE(big ? U32_MAX : h.compressedSize, 18);
    l.writeUInt32LE(big ? U32_MAX : h.size, 22);
    l.writeUInt16LE(name.length, 26);
    l.writeUInt16LE(localExtra, 28);
    name.copy(l, LOCAL_HEADER_SIZE);
    let p = LOCAL_HEADER_SIZE + name.length;
    p = writeTimestamp(l, p, mtime32);
    if (big) {
      l.writeUInt16LE(EXTRA_ZIP64, p);
      l.writeUInt16LE(16, p + 2);
      l.writeBigUInt64LE(BigInt(h.size), p + 4);
      l.writeBigUInt64LE(BigInt(h.compressedSize), p + 12);
    }
    this.write(l);

    // Central header: Zip64 fields only for the values that overflow, in the order APPNOTE gives.
    const z64: number[] = [];
    if (h.size >= U32_MAX) z64.push(h.size);
    if (h.compressedSize >= U32_MAX) z64.push(h.compressedSize);
    if (localOffset >= U32_MAX) z64.push(localOffset);
    const centralExtra = 9 + (z64.length > 0 ? 4 + 8 * z64.length : 0);
    const need = CENTRAL_HEADER_SIZE + name.length + centralExtra;
    if (this.centralUsed + need > this.central.length) {
      const next = Buffer.allocUnsafe(Math.max(this.central.length * 2, this.centralUsed + need));
      this.central.copy(next, 0, 0, this.centralUsed);
      this.central = next;
    }
    const c = this.central;
    const o = this.centralUsed;
    c.writeUInt32LE(SIG_CENTRAL, o);
    c.writeUInt16LE(VERSION_MADE_BY, o + 4);
    c.writeUInt16LE(needed, o + 6);
    c.writeUInt16LE(flags, o + 8);
    c.writeUInt16LE(h.method, o + 10);
    c.writeUInt16LE(time, o + 12);
    c.writeUInt16LE(date, o + 14);
    c.writeUInt32LE(h.crc >>> 0, o + 16);
    c.writeUInt32LE(Math.min(h.compressedSize, U32_MAX), o + 20);
    c.writeUInt32LE(Math.min(h.size, U32_MAX), o + 24);
    c.writeUInt16LE(name.length, o + 28);
    c.writeUInt16LE(centralExtra, o + 30);
    c.writeUInt16LE(0, o + 32); // comment
    c.writeUInt16LE(0, o + 34); // disk
    c.writeUInt16LE(0, o + 36); // internal attributes
    const dosAttr = (h.mode & S_IFMT) === S_IFDIR ? DOS_DIR_ATTR : 0;
    c.writeUInt32LE((((h.mode & 0xffff) << 16) | dosAttr) >>> 0, o + 38);
    c.writeUInt32LE(Math.min(localOffset, U32_MAX), o + 42);
    name.copy(c, o + CENTRAL_HEADER_SIZE);
    let q = writeTimestamp(c, o + CENTRAL_HEADER_SIZE + name.length, mtime32);
    if (z64.length > 0) {
      c.writeUInt16LE(EXTRA_ZIP64, q);
      c.writeUInt16LE(8 * z64.length, q + 2);
      q += 4;
      for (const v of z64) {
        c.writeBigUInt64LE(BigInt(v), q);
        q += 8;
      }
    }
    this.centralUsed += need;
    this.count++;
  }

  /** Writes the central directory and end records and flushes. The caller closes the fd. */
  finish(): void {
    const cdOffset = this.size;
    const cdSize = this.centralUsed;
    this.write(this.central.subarray(0, cdSize));
    const zip64 = this.count >= U16_MAX || cdOffset >= U32_MAX || cdSize >= U32_MAX;
    if (zip64) {
      const z64Pos = this.size;
      const z = Buffer.alloc(ZIP64_EOCD_SIZE + ZIP64_LOCATOR_SIZE);
      z.writeUInt32LE(SIG_ZIP64_EOCD, 0);
      z.writeBigUInt64LE(BigInt(ZIP64_EOCD_SIZE - 12), 4);
      z.writeUInt16LE(VERSION_MADE_BY, 12);
      z.writeUInt16LE(VERSION_NEEDED_ZIP64, 14);
      z.writeBigUInt64LE(BigInt(this.count), 24);
      z.writeBigUInt64LE(BigInt(this.count), 32);
      z.writeBigUInt64LE(BigInt(cdSize), 40);
      z.writeBigUInt64LE(BigInt(cdOffset), 48);
      z.writeUInt32LE(SIG_ZIP64_LOCATOR, ZIP64_EOCD_SIZE);
      z.writeBigUInt64LE(BigInt(z64Pos), ZIP64_EOCD_SIZE + 8);
      z.writeUInt32LE(1, ZIP64_EOCD_SIZE + 16);
      this.write(z);
    }
    const e = Buffer.alloc(EOCD_SIZE);
    e.writeUInt32LE(SIG_EOCD, 0);
    e.writeUInt16LE(Math.min(this.count, U16_MAX), 8);
    e.writeUInt16LE(Math.min(this.count, U16_MAX), 10);
    e.writeUInt32LE(Math.min(cdSize, U32_MAX), 12);
    e.writeUInt32LE(Math.min(cdOffset, U32_MAX), 16);
    this.write(e);
    this.flush();
  }

  private write(data: Uint8Array): void {
    if (data.length >= FLUSH_AT) {
      this.flush();
      this.writeOut(data);
      return;
    }
    if (this.used + data.length > this.buf.length) this.flush();
    this.buf.set(data, this.used);
    this.used += data.length;
    if (this.used >= FLUSH_AT) this.flush();
  }

  private flush(): void {
    if (this.used === 0) return;
    const n = this.used;
    this.used = 0;
    this.writeOut(this.buf.subarray(0, n));
  }

  private writeOut(data: Uint8Array): void {
    // writeAll waits out EAGAIN: stdout ('-') may be a non-blocking pipe whose reader is slower.
    writeAll(this.fd, data, this.path);
    this.offset += data.length;
  }
}

function writeTimestamp(b: Buffer, p: number, mtime: number): number {
  b.writeUInt16LE(EXTRA_TIMESTAMP, p);
  b.writeUInt16LE(5, p + 2);
  b[p + 4] = 1; // mtime present
  b.writeUInt32LE(mtime, p + 5);
  return p + 9;
}
