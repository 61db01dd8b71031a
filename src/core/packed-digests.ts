/**
 * A set of digests, in insertion order, held packed: the 32 bytes of each SHA-256 and its size in
 * typed arrays, indexed by an open-addressing table, instead of a `{ hash, size }` object and a
 * 64-character string per digest on the JS heap.
 *
 * Perf: a remote checkout of the Linux tree held its 78k file digests that way for the whole run
 * (the fetcher's list, beside the checkout's own decoded tree): about 13 MB of live heap, which V8
 * lets grow several times over before collecting. Packed they take 40 bytes each plus 4-8 bytes of
 * table, outside the heap.
 *
 * The table's hash is keyed with random multipliers drawn per set (multilinear hashing over the
 * digest's eight words), as a tree's file digests are chosen by whoever made the tree: a fixed
 * hash would let one craft digests that all collide and turn each lookup into a scan.
 */
import { randomFillSync } from 'node:crypto';
import type { Digest } from './digest.js';

const WORDS = 8; // 32 bytes of SHA-256

export class PackedDigests {
  private words: Uint32Array;
  private sizes: Float64Array;
  /** Slot -> index + 1 (0: empty). Its length is a power of two, at least twice `length`. */
  private table: Int32Array;
  private shift: number;
  private readonly keys = new Uint32Array(WORDS + 1);
  private readonly scratch = Buffer.alloc(WORDS * 4);
  private readonly scratchWords = new Uint32Array(this.scratch.buffer, this.scratch.byteOffset, WORDS);
  length = 0;

  constructor(capacity = 64) {
    randomFillSync(this.keys);
    for (let i = 0; i < WORDS; i++) this.keys[i]! |= 1;
    const cap = Math.max(16, capacity);
    this.words = new Uint32Array(cap * WORDS);
    this.sizes = new Float64Array(cap);
    const bits = Math.max(5, Math.ceil(Math.log2(cap * 2)));
    this.table = new Int32Array(1 << bits);
    this.shift = 32 - bits;
  }

  /** Adds `d` when absent; returns whether it was added. */
  add(d: Digest): boolean {
    const w = this.parse(d.hash);
    const slot = this.find(w);
    if (this.table[slot]! !== 0) return false;
    if (this.length === this.sizes.length) {
      this.grow();
      return this.add(d);
    }
    const i = this.length++;
    this.words.set(w, i * WORDS);
    this.sizes[i] = d.size;
    this.table[slot] = i + 1;
    return true;
  }

  /** The index of `d` (by hash), or -1. */
  indexOf(d: Digest): number {
    return this.table[this.find(this.parse(d.hash))]! - 1;
  }

  has(d: Digest): boolean {
    return this.indexOf(d) >= 0;
  }

  /** The digest at `i` (0 <= i < length), as a new object. */
  at(i: number): Digest {
    return { hash: Buffer.from(this.words.buffer, i * WORDS * 4, WORDS * 4).toString('hex'), size: this.sizes[i]! };
  }

  *[Symbol.iterator](): Generator<Digest> {
    for (let i = 0; i < this.length; i++) yield this.at(i);
  }

  /** The longest run of occupied table slots: what one lookup may have to compare (for tests of the hashing). */
  longestRun(): number {
    let longest = 0;
    let run = 0;
    // Twice round, so a run that wraps past the end is counted whole.
    for (let s = 0; s < this.table.length * 2; s++) {
      run = this.table[s & (this.table.length - 1)] === 0 ? 0 : run + 1;
      if (run > longest) longest = run;
    }
    return Math.min(longest, this.length);
  }

  /** The hex hash as eight words in the scratch buffer (valid until the next call). */
  private parse(hex: string): Uint32Array {
    if (hex.length !== WORDS * 8 || this.scratch.write(hex, 'hex') !== WORDS * 4) throw new Error(`not a SHA-256 hex digest: ${hex}`);
    return this.scratchWords;
  }

  /** The slot holding `w`, or the empty slot where it would go (linear probing). */
  private find(w: Uint32Array): number {
    let h = this.keys[WORDS]!;
    for (let k = 0; k < WORDS; k++) h = (h + Math.imul(this.keys[k]!, w[k]!)) | 0;
    const mask = this.table.length - 1;
    for (let slot = h >>> this.shift; ; slot = (slot + 1) & mask) {
      const e = this.table[slot]!;
      if (e === 0 || this.equals(e - 1, w)) return slot;
    }
  }

  private equals(i: number, w: Uint32Array): boolean {
    const base = i * WORDS;
    for (let k = 0; k < WORDS; k++) if (this.words[base + k] !== w[k]) return false;
    return true;
  }

  /** Doubles the arrays and rebuilds the table. */
  private grow(): void {
    const cap = this.sizes.length * 2;
    const words = new Uint32Array(cap * WORDS);
    words.set(this.words);
    const sizes = new Float64Array(cap);
    sizes.set(this.sizes);
    this.words = words;
    this.sizes = sizes;
    this.table = new Int32Array(this.table.length * 2);
    this.shift--;
    const w = new Uint32Array(WORDS);
    for (let i = 0; i < this.length; i++) {
      w.set(this.words.subarray(i * WORDS, (i + 1) * WORDS));
      this.table[this.find(w)] = i + 1;
    }
  }
}
