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
 * The messages of a pack, found by hash: an index from the first 48 bits of each hash to where its
 * message lies, every hash compared in full when asked for. Perf: with a Map from each hex hash to
 * a subarray (a string and a Buffer per message), reading the two packs of the Linux tree's 1%
 * update (5,095 messages each; the update asks for ~1,900 of them) took 28.3-29.5 ms (median 28.8)
 * in a fresh process, against 22.7-25.2 ms (median 23.7) with this index (6 interleaved runs each,
 * chrt -f 10); the rest is the read and the checksum.
 */
export class PackIndex implements MessagesByHash {
  private readonly at = new Map<number, number>();
  /** Messages whose first 48 bits another message of the pack shares, by full hex hash. */
  private collided: Map<string, Buffer> | undefined;

  constructor(private readonly buf: Buffer) {}

  /** Indexes the message whose header is at `off` (both go to `collided` when another has its first 48 bits). */
  add(off: number): void {
    const key = this.buf.readUIntBE(off, 6);
    const other = this.at.get(key);
    if (other === undefined) {
      this.at.set(key, off);
      return;
    }
    this.collided ??= new Map();
    this.collided.set(this.buf.toString('hex', off, off + 32), this.message(off));
    this.collided.set(this.buf.toString('hex', other, other + 32), this.message(other));
  }

  get(hash: string): Buffer | undefined {
    const hit = this.collided?.get(hash);
    if (hit) return hit;
    if (hash.length !== 64) return undefined;
    const off = this.at.get(Number.parseInt(hash.slice(0, 12), 16));
    if (off === undefined || this.buf.toString('hex', off, off + 32) !== hash) return undefined;
    return this.message(off);
  }

  /** How many messages the pack holds. */
  get size(): number {
    let n = 0;
    for (const _ of this.keys()) n++;
    return n;
  }

  /** The hashes of the pack's messages, in the pack's order. */
  *keys(): Generator<string> {
    for (let off = 40; off + 36 <= this.buf.length; off += 36 + this.buf.readUInt32LE(off + 32)) yield this.buf.toString('hex', off, off + 32);
  }

  private message(off: number): Buffer {
    return this.buf.subarray(off + 36, off + 36 + this.buf.readUInt32LE(off + 32));
  }
}

/** The messages of `root`'s pack by hash, or undefined when there is none or it is damaged. */
export function readTreePack(store: LocalStore, root: Digest): PackIndex | undefined {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(packPath(store, root));
  } catch {
    return undefined;
  }
  if (buf.length < 40 || !buf.subarray(0, 8).equals(MAGIC)) return undefined;
  if (!createHash('sha256').update(buf.subarray(40)).digest().equals(buf.subarray(8, 40))) return undefined;
  const out = new PackIndex(buf);
  let off = 40;
  while (off + 36 <= buf.length) {
    const len = buf.readUInt32LE(off + 32);
    if (off + 36 + len > buf.length) return undefined;
    out.add(off);
    off += 36 + len;
  }
  return off === buf.length && out.get(root.hash) !== undefined ? out : undefined;
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
