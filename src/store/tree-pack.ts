/**
 * Tree packs: every Directory message of one tree in a single file, STORE/trees/<root hash>,
 * written after the messages were read verified (snapshot, checkout, pull). A full checkout then
 * reads one file instead of one blob per directory.
 *
 * Perf: on the Linux tree (5,096 directories) loading the tree took ~0.4 s of a hardlink
 * checkout as 5,096 open/read/close calls and SHA-256 hashes; from a pack it is one read and one
 * hash. Every message is still decoded and validated (names, order) before use: a pack saves I/O,
 * never checks.
 *
 * Format: "TCPACK1\n", SHA-256 of the rest (32 bytes), then per message: its hash (32 bytes),
 * its length (u32 LE), its bytes.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { Digest } from '../core/digest.js';
import type { LocalStore } from './local.js';

const MAGIC = Buffer.from('TCPACK1\n');

function packPath(store: LocalStore, root: Digest): string {
  return join(store.root, 'trees', root.hash);
}

/** Whether `root` has a pack (gc removes a pack only with the tree's blobs). */
export function hasTreePack(store: LocalStore, root: Digest): boolean {
  return fs.existsSync(packPath(store, root));
}

/** The size in bytes of `root`'s pack, or undefined when it has none: a cheap hint of the tree's size. */
export function treePackBytes(store: LocalStore, root: Digest): number | undefined {
  return fs.statSync(packPath(store, root), { throwIfNoEntry: false })?.size;
}

/** Messages by hash (a tree pack's, or a map of verified ones). */
export interface MessagesByHash {
  get(hash: string): Buffer | undefined;
}

/**
 * The messages of a pack, found by hash (RawTreePack's index, the hash given in hex): what an
 * update's planner, the server's /tree and a snapshot reusing the last one's messages ask for.
 * Perf: reading both packs of the Linux tree's 1% update and getting the 1,911 messages it asks
 * for, in a fresh process, 5 interleaved runs at load 3: 47.0 ms median (38.6-52.8) through this,
 * 44.8 ms (39.5-147) through an index of its own keyed by each hash's first 48 bits; one index for
 * both uses, so no second copy of the pack's reading and checks.
 */
export class PackIndex implements MessagesByHash {
  constructor(readonly raw: RawTreePack) {}

  get(hash: string): Buffer | undefined {
    if (!HEX64.test(hash)) return undefined;
    const i = findInPack(this.raw, Buffer.from(hash, 'hex'), 0, false);
    return i < 0 ? undefined : this.raw.buf.subarray(this.raw.starts[i], this.raw.ends[i]);
  }

  /** How many messages the pack holds. */
  get size(): number {
    return this.raw.starts.length;
  }

  /** The hashes of the pack's messages, in the pack's order. */
  *keys(): Generator<string> {
    for (const start of this.raw.starts) yield this.raw.buf.toString('hex', start - 36, start - 4);
  }
}

const HEX64 = /^[0-9a-f]{64}$/;

/** The messages of `root`'s pack by hash, or undefined when there is none, it is damaged or lacks the root. */
export function readTreePack(store: LocalStore, root: Digest): PackIndex | undefined {
  const raw = readTreePackRaw(store, root);
  return raw && new PackIndex(raw);
}

/**
 * A pack's messages as byte ranges of the one file read, found by hash without a string per
 * message: what a fresh checkout loads the whole tree from (TreeReader.loadPackedSync).
 */
export interface RawTreePack {
  readonly buf: Buffer;
  /** Per message: where its bytes start and end in `buf` (its hash is the 32 bytes 36 before its start). */
  readonly starts: Uint32Array;
  readonly ends: Uint32Array;
  /** Open addressing on the hash's first four bytes: message index + 1, 0 for an empty slot. */
  readonly slots: Int32Array;
}

/**
 * `root`'s pack as a RawTreePack, or undefined when there is none, it is damaged (magic, checksum,
 * whole records) or lacks the root. A hash the pack holds twice finds its last message.
 * Perf: on the Linux tree's pack (5,092 messages, 7.5 MB), in a fresh process run as SCHED_FIFO,
 * a Map of a hex string and a Buffer per message took 16.7 ms and this 14.1 ms (medians of 8
 * interleaved runs), of which the read and the checksum take ~10 ms; its real gain is in the load,
 * which then makes no hex string, Map entry or Buffer per subdirectory (tree-reader.ts
 * loadFromRawPack).
 */
export function readTreePackRaw(store: LocalStore, root: Digest): RawTreePack | undefined {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(packPath(store, root));
  } catch {
    return undefined;
  }
  if (buf.length < 40 || !buf.subarray(0, 8).equals(MAGIC)) return undefined;
  if (!createHash('sha256').update(buf.subarray(40)).digest().equals(buf.subarray(8, 40))) return undefined;
  // A message takes at least its 36-byte header.
  const most = Math.floor((buf.length - 40) / 36);
  let starts = new Uint32Array(most);
  let ends = new Uint32Array(most);
  let n = 0;
  let off = 40;
  while (off + 36 <= buf.length) {
    const len = buf.readUInt32LE(off + 32);
    off += 36;
    if (off + len > buf.length) return undefined;
    starts[n] = off;
    ends[n++] = off + len;
    off += len;
  }
  if (off !== buf.length) return undefined;
  starts = starts.subarray(0, n);
  ends = ends.subarray(0, n);
  let size = 16;
  while (size < n * 2) size *= 2;
  const slots = new Int32Array(size);
  const mask = size - 1;
  for (let i = 0; i < n; i++) {
    const h = starts[i]! - 36;
    for (let s = buf.readUInt32LE(h) & mask; ; s = (s + 1) & mask) {
      const at = slots[s]!;
      if (at === 0 || buf.compare(buf, starts[at - 1]! - 36, starts[at - 1]! - 4, h, h + 32) === 0) {
        slots[s] = i + 1;
        break;
      }
    }
  }
  const pack: RawTreePack = { buf, starts, ends, slots };
  const rootHash = Buffer.from(root.hash, 'hex');
  return root.hash.length === 64 && findInPack(pack, rootHash, 0, false) >= 0 ? pack : undefined;
}

/**
 * The index of the message whose hash is at `at` in `key`: 32 bytes, or (`hex`) 64 lowercase hex
 * characters, as a Directory entry's digest holds it; -1 when the pack has none.
 */
export function findInPack(pack: RawTreePack, key: Uint8Array, at: number, hex: boolean): number {
  const { buf, starts, slots } = pack;
  const mask = slots.length - 1;
  const first = hex ? hexByte(key, at) | (hexByte(key, at + 2) << 8) | (hexByte(key, at + 4) << 16) | (hexByte(key, at + 6) << 24) : key[at]! | (key[at + 1]! << 8) | (key[at + 2]! << 16) | (key[at + 3]! << 24);
  for (let s = (first >>> 0) & mask; ; s = (s + 1) & mask) {
    const i = slots[s]! - 1;
    if (i < 0) return -1;
    const h = starts[i]! - 36;
    let same = !hex && buf.compare(key, at, at + 32, h, h + 32) === 0;
    for (let k = 0; hex && k < 32 && (same = buf[h + k] === hexByte(key, at + 2 * k)); k++);
    if (same) return i;
  }
}

/** The byte two lowercase hex characters at `at` spell (the caller has checked they are hex). */
function hexByte(b: Uint8Array, at: number): number {
  const x = b[at]!;
  const y = b[at + 1]!;
  return ((x <= 57 ? x - 48 : x - 87) << 4) | (y <= 57 ? y - 48 : y - 87);
}

/** Writes the pack of `root` from verified messages (hash -> bytes), atomically. Best effort. */
export function writeTreePack(store: LocalStore, root: Digest, messages: Iterable<[string, Uint8Array]>): void {
  const parts: Buffer[] = [];
  for (const [hash, bytes] of messages) {
    const head = Buffer.allocUnsafe(36);
    head.write(hash, 0, 32, 'hex');
    head.writeUInt32LE(bytes.length, 32);
    parts.push(head, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  }
  const body = Buffer.concat(parts);
  const file = Buffer.concat([MAGIC, createHash('sha256').update(body).digest(), body]);
  const tmp = store.tmpPath('pack');
  try {
    fs.mkdirSync(join(store.root, 'trees'), { recursive: true });
    fs.writeFileSync(tmp, file);
    fs.renameSync(tmp, packPath(store, root));
  } catch {
    fs.rmSync(tmp, { force: true });
  }
}
