/**
 * A whole tree's Directory messages decoded into flat arrays instead of an object per entry: for
 * each entry its kind, the byte ranges of its name and of its hash (or symlink target) in its
 * message's own bytes, and its size; for each directory, its bytes and the range of its entries.
 * Names, hashes and targets become strings only when a caller asks for one (a checkout's plan
 * makes them as it hands out batches, where they die young).
 *
 * Validation is decodeDirectory's (reapi.ts), checked on the bytes: a message is accepted here
 * only if decodeDirectory accepts it. Anything the byte checks do not accept, and every message
 * with a byte outside ASCII in a name or target (UTF-8 validity, the UTF-8 order of names), is
 * handed to decodeDirectory itself, so such a message is refused with exactly its error.
 *
 * Perf: decoding into objects (a name and a hash string, a Digest and a node per entry, all kept
 * live for the whole checkout) took 114-121 ms of CPU in a fresh process on the node_modules
 * corpus (26,244 files, 5,053 directories; 3 runs), a good part of it garbage collection, before
 * the first write of a checkout. Instructions (callgrind, `node --single-threaded`) of a script
 * that reads the tree's pack, loads the tree and plans a fresh checkout, against the same script
 * stopped after reading the pack: node_modules 1,741-1,751 M (3 runs) -> 1,415-1,517 M (3 runs),
 * 820 M for the pack alone, so ~0.92 G -> ~0.65 G for loading and planning; the Linux tree
 * (78,579 files, 5,095 directories) 2,427-2,627 M -> 1,906-1,914 M (2 runs each), 944 M for the
 * pack alone. Peak RSS of `checkout` (18 and 12 interleaved runs): node_modules copy 103 MB
 * (96-104) -> 85 MB (84-89), Linux hardlink 131 MB (127-132) -> 102 MB (98-103).
 */
import { Cursor, TAG_DIGEST, TAG_DIR, TAG_EXEC, TAG_FILE, TAG_HASH, TAG_LINK, TAG_NAME, TAG_SIZE, TAG_TARGET, compareBytes, decodeDirectory, sharedNameAt } from './reapi.js';
import { MAX_NAME_BYTES, MAX_TARGET_BYTES } from './names.js';
import { InvalidTreeError } from '../errors.js';

/** Entry kinds in `PackedTree.kinds`. */
export const P_FILE = 0;
export const P_EXEC = 1;
export const P_DIR = 2;
export const P_LINK = 3;

/** Thrown inside the byte checks; the caller then asks decodeDirectory for the real error. */
const REFUSED = new Error('refused');
const PARSE_WHERE = 'in a tree';

export class PackedTree {
  /** Per directory: its message bytes. */
  readonly bytes: Buffer[] = [];
  /** Per directory: its entries are [first[i], fileEnd[i]) files, [fileEnd, dirEnd) dirs, [dirEnd, first[i+1]) links. */
  readonly first: number[] = [0];
  readonly fileEnd: number[] = [];
  readonly dirEnd: number[] = [];
  /** Per entry (P_*), offsets into its directory's bytes. */
  kinds: Uint8Array;
  nameStarts: Uint32Array;
  nameEnds: Uint32Array;
  /** The hash's 64 bytes start here (files, dirs) or the target's bytes (links). */
  valueStarts: Uint32Array;
  /** The digest's size (files, dirs) or the target's end offset (links). */
  values: Float64Array;
  /** Directory entries: the index of the directory they name, once it is loaded (else -1). */
  children: Int32Array;
  /** Entries in use. */
  entries = 0;

  /** `capacity`: entries to make room for at first (the arrays grow as needed). */
  constructor(capacity = 1024) {
    const n = Math.max(16, capacity);
    this.kinds = new Uint8Array(n);
    this.nameStarts = new Uint32Array(n);
    this.nameEnds = new Uint32Array(n);
    this.valueStarts = new Uint32Array(n);
    this.values = new Float64Array(n);
    this.children = new Int32Array(n);
  }

  get directories(): number {
    return this.bytes.length;
  }

  /** Directory `d`'s entry `e`'s name. */
  name(d: number, e: number): string {
    return this.bytes[d]!.toString('utf8', this.nameStarts[e]!, this.nameEnds[e]!);
  }

  /** The hex hash of entry `e` (a file or directory) of directory `d`. */
  hash(d: number, e: number): string {
    const s = this.valueStarts[e]!;
    return this.bytes[d]!.toString('latin1', s, s + 64);
  }

  /** The symlink target of entry `e` of directory `d`. */
  target(d: number, e: number): string {
    return this.bytes[d]!.toString('utf8', this.valueStarts[e]!, this.values[e]!);
  }

  /**
   * Validates one Directory message and appends it; returns its index. `where` names it in
   * errors (its digest), as decodeDirectory does; as a function, it is asked only for an error.
   * Perf: a tree loaded from its pack has no hex string per message (tree-reader.ts), and the
   * digest's text per message was two strings for each of the Linux tree's 5,095 directories.
   */
  add(bytes: Buffer, where: string | (() => string)): number {
    const start = this.entries;
    let nonAscii: boolean;
    try {
      nonAscii = this.parse(bytes);
    } catch (e) {
      this.entries = start;
      const named = typeof where === 'string' ? where : where();
      // decodeDirectory names what is wrong (the byte checks accept no less than it does).
      decodeDirectory(bytes, named);
      if (e === REFUSED || e instanceof InvalidTreeError) new Cursor(bytes, `in ${named}`).fail('not canonical');
      throw e;
    }
    if (nonAscii) {
      try {
        decodeDirectory(bytes, typeof where === 'string' ? where : where());
      } catch (e) {
        this.entries = start;
        throw e;
      }
    }
    const d = this.bytes.length;
    this.bytes.push(bytes);
    this.first.push(this.entries);
    return d;
  }

  private grow(): void {
    const n = this.kinds.length * 2;
    const g = <T extends Uint8Array | Uint32Array | Float64Array | Int32Array>(a: T, make: new (n: number) => T): T => {
      const b = new make(n);
      b.set(a);
      return b;
    };
    this.kinds = g(this.kinds, Uint8Array);
    this.nameStarts = g(this.nameStarts, Uint32Array);
    this.nameEnds = g(this.nameEnds, Uint32Array);
    this.valueStarts = g(this.valueStarts, Uint32Array);
    this.values = g(this.values, Float64Array);
    this.children = g(this.children, Int32Array);
  }

  /**
   * The checks of decodeDirectory on one message's bytes, appending its entries. Throws on anything
   * it does not accept. Returns whether a name or target holds a byte outside ASCII, which
   * decodeDirectory must then judge (UTF-8 validity).
   * Perf: small functions, not one: Turbofan took ~55 ms (twice, OSR and not) to compile one
   * function holding every check (--trace-opt), more than the decoding it sped up.
   */
  private parse(buf: Buffer): boolean {
    const total = buf.length;
    // Its errors are never shown: add() asks decodeDirectory, which names the message.
    const c = new Cursor(buf, PARSE_WHERE);
    let lastTag = 0;
    let nonAscii = false;
    const first = this.entries;
    let fileEnd = first;
    let dirEnd = first;
    while (c.pos < total) {
      const tag = c.varint();
      if (tag !== TAG_FILE && tag !== TAG_DIR && tag !== TAG_LINK) throw REFUSED;
      if (tag < lastTag) throw REFUSED;
      lastTag = tag;
      const end = c.end(total);
      if (this.entries === this.kinds.length) this.grow();
      const e = this.entries;
      if (this.entry(c, tag, end, e > first)) nonAscii = true;
      if (tag === TAG_FILE) fileEnd = dirEnd = e + 1;
      else if (tag === TAG_DIR) dirEnd = e + 1;
      this.entries++;
    }
    // No name in two groups.
    if (sharedNameAt(buf, this.nameStarts, this.nameEnds, first, fileEnd, dirEnd, this.entries) >= 0) throw REFUSED;
    this.fileEnd.push(fileEnd);
    this.dirEnd.push(dirEnd);
    return nonAscii;
  }

  /** One entry, from after its length to `end`, as entry `this.entries`; true when not ASCII. */
  private entry(c: Cursor, tag: number, end: number, notFirst: boolean): boolean {
    const buf = c.buf;
    const e = this.entries;
    if (tag !== TAG_LINK) {
      const fast = this.digestEntry(buf, c.pos, tag, end, notFirst);
      if (fast >= 0) {
        c.pos = end;
        return fast === 1;
      }
    }
    if (c.varint() !== TAG_NAME) throw REFUSED;
    const nameEnd = c.end(end);
    const nameStart = c.pos;
    let nonAscii = nameProblem(buf, nameStart, nameEnd);
    c.pos = nameEnd;
    // Each group strictly increasing in UTF-8 byte order (so no duplicate within it).
    if (notFirst && sameGroup(this.kinds[e - 1]!, tag) && compareBytes(buf, this.nameStarts[e - 1]!, this.nameEnds[e - 1]!, buf, nameStart, nameEnd) >= 0) {
      throw REFUSED;
    }
    this.nameStarts[e] = nameStart;
    this.nameEnds[e] = nameEnd;
    if (tag === TAG_LINK) {
      if (c.pos >= end || c.varint() !== TAG_TARGET) throw REFUSED;
      const tEnd = c.end(end);
      if (targetProblem(buf, c.pos, tEnd)) nonAscii = true;
      this.valueStarts[e] = c.pos;
      this.values[e] = tEnd;
      this.kinds[e] = P_LINK;
      c.pos = tEnd;
    } else {
      if (c.pos >= end || c.varint() !== TAG_DIGEST) throw REFUSED;
      const dEnd = c.end(end);
      // The hash's tag and length are a byte each once readDigestBytes accepts them (minimal varints).
      this.valueStarts[e] = c.pos + 2;
      this.values[e] = readDigestBytes(c, dEnd);
      if (tag === TAG_FILE) {
        let kind = P_FILE;
        if (c.pos < end) {
          if (c.varint() !== TAG_EXEC || c.varint() !== 1) throw REFUSED;
          kind = P_EXEC;
        }
        this.kinds[e] = kind;
      } else {
        this.kinds[e] = P_DIR;
        this.children[e] = -1;
      }
    }
    if (c.pos !== end) throw REFUSED;
    return nonAscii;
  }

  /**
   * A file or directory entry in its usual shape, read with plain offsets: the name's and the
   * digest's lengths one byte each, the hash field as canonical writers put it, the size a varint
   * of at most 5 bytes, an executable flag only as `0x20 0x01` at the end. Accepts, and records
   * as entry `this.entries`, only what `entry`'s general reading accepts, with the same offsets and
   * values; on anything else (including every error) it records nothing and returns -1, and the
   * general reading decides. Returns 1 when the name has a byte outside ASCII, else 0.
   * Perf: loading a whole tree is on the critical path of a fresh checkout (nothing is written
   * before it is validated), and the general reading (a Cursor call per field) took ~150 ms of CPU
   * on the Linux tree (78,579 files) in a fresh process, most of it before Turbofan's code was
   * ready. Instructions (callgrind, `node --single-threaded`) of a script that imports the modules,
   * loads that tree from its pack and lists a fresh checkout's steps: 1,991 and 1,982 M without
   * this, 1,868 and 2,010 M with it (2,037 and 2,038 M before the loadPackedOne change too).
   */
  private digestEntry(buf: Buffer, p: number, tag: number, end: number, notFirst: boolean): number {
    if (p + 2 > end || buf[p] !== TAG_NAME) return -1;
    const n = buf[p + 1]!;
    if (n === 0 || n >= 0x80) return -1;
    const ns = p + 2;
    const ne = ns + n;
    if (ne + 2 > end) return -1;
    if (buf[ns] === 0x2e && (n === 1 || (n === 2 && buf[ns + 1] === 0x2e))) return -1;
    let high = 0;
    for (let q = ns; q < ne; q++) {
      const b = buf[q]!;
      if (b === 0x2f || b === 0) return -1;
      high |= b;
    }
    const e = this.entries;
    if (notFirst && sameGroup(this.kinds[e - 1]!, tag) && compareBytes(buf, this.nameStarts[e - 1]!, this.nameEnds[e - 1]!, buf, ns, ne) >= 0) return -1;
    if (buf[ne] !== TAG_DIGEST) return -1;
    const dl = buf[ne + 1]!;
    if (dl < 66 || dl >= 0x80) return -1;
    const hs = ne + 4;
    const de = ne + 2 + dl;
    if (de > end || buf[ne + 2] !== TAG_HASH || buf[ne + 3] !== 64 || !isHexAt(buf, hs)) return -1;
    let q = hs + 64;
    let size = 0;
    if (q < de) {
      if (buf[q++] !== TAG_SIZE) return -1;
      let mul = 1;
      for (let i = 0; ; i++) {
        if (i === 5 || q >= de) return -1;
        const b = buf[q++]!;
        size += (b & 0x7f) * mul;
        if (b < 0x80) {
          if (b === 0) return -1; // a non-minimal varint, or a size of 0 written out
          break;
        }
        mul *= 0x80;
      }
      if (q !== de) return -1;
    }
    let kind: number = tag === TAG_FILE ? P_FILE : P_DIR;
    if (de !== end) {
      if (tag !== TAG_FILE || de + 2 !== end || buf[de] !== TAG_EXEC || buf[de + 1] !== 1) return -1;
      kind = P_EXEC;
    }
    this.nameStarts[e] = ns;
    this.nameEnds[e] = ne;
    this.valueStarts[e] = hs;
    this.values[e] = size;
    this.kinds[e] = kind;
    if (kind === P_DIR) this.children[e] = -1;
    return high >= 0x80 ? 1 : 0;
  }
}

/**
 * decodedNameProblem on a name's bytes (empty, '.', '..', '/', NUL, over MAX_NAME_BYTES); throws
 * on one. Returns whether it has a byte outside ASCII.
 */
function nameProblem(buf: Buffer, start: number, end: number): boolean {
  const n = end - start;
  if (n === 0 || n > MAX_NAME_BYTES) throw REFUSED;
  if (buf[start] === 0x2e && (n === 1 || (n === 2 && buf[start + 1] === 0x2e))) throw REFUSED;
  let high = 0;
  for (let p = start; p < end; p++) {
    const b = buf[p]!;
    if (b === 0x2f || b === 0) throw REFUSED;
    high |= b;
  }
  return high >= 0x80;
}

/** symlinkTargetProblem on bytes (empty, NUL, over MAX_TARGET_BYTES); true when not ASCII. */
function targetProblem(buf: Buffer, start: number, end: number): boolean {
  if (end === start || end - start > MAX_TARGET_BYTES) throw REFUSED;
  let high = 0;
  for (let p = start; p < end; p++) {
    const b = buf[p]!;
    if (b === 0) throw REFUSED;
    high |= b;
  }
  return high >= 0x80;
}

/** A canonical Digest's fields up to `end`: the hash (64 lowercase hex), then the size only when non-zero. Returns the size. */
function readDigestBytes(c: Cursor, end: number): number {
  if (c.varint() !== TAG_HASH) throw REFUSED;
  const hEnd = c.end(end);
  if (hEnd - c.pos !== 64 || !isHexAt(c.buf, c.pos)) throw REFUSED;
  c.pos = hEnd;
  let size = 0;
  if (c.pos < end) {
    if (c.varint() !== TAG_SIZE) throw REFUSED;
    size = c.varint();
    if (size === 0) throw REFUSED;
  }
  if (c.pos !== end) throw REFUSED;
  return size;
}

/** 1 for the bytes of lowercase hex digits. */
const HEX = new Uint8Array(256);
for (const c of '0123456789abcdef') HEX[c.charCodeAt(0)] = 1;

/**
 * 64 lowercase hex characters at `start` (the caller has checked they are in the buffer).
 * Perf: a table lookup per byte, no branch: loading the Linux tree (83,713 entries) from its pack
 * in a fresh process took 33.3 ms against 48.9 ms with two range tests per byte (medians of 10
 * interleaved runs, SCHED_FIFO). The same table for the name bytes measured no better (50.1 ms
 * against 47.2 ms for pack and load, 8 runs), so names keep their loop.
 */
function isHexAt(buf: Buffer, start: number): boolean {
  let ok = 1;
  for (let p = start, e = start + 64; p < e; p++) ok &= HEX[buf[p]!]!;
  return ok === 1;
}

function kindOf(tag: number): number {
  return tag === TAG_FILE ? P_FILE : tag === TAG_DIR ? P_DIR : P_LINK;
}

/** Whether an entry of kind `k` is in the same group (files, dirs, links) as a field `tag`. */
function sameGroup(k: number, tag: number): boolean {
  return tag === TAG_FILE ? k <= P_EXEC : k === kindOf(tag);
}
