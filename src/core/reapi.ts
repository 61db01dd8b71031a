/**
 * Canonical REAPI v2 `Directory` messages (build/bazel/remote/execution/v2/remote_execution.proto).
 *
 * Hand-written rather than generated: the four messages use a handful of fields, and a strict
 * decoder must refuse what a general protobuf library accepts (unknown fields, fields out of
 * order, default values written out, unsorted or duplicate names). Decoding re-encodes and compares
 * bytes, so any message accepted here hashes to the digest it was stored under.
 */
import { type Digest, digestOf, isHash } from './digest.js';
import { compareNames, decodedNameProblem, symlinkTargetProblem } from './names.js';
import { InvalidTreeError } from '../errors.js';

export interface FileNode {
  readonly name: string;
  readonly digest: Digest;
  readonly executable: boolean;
}
export interface DirectoryNode {
  readonly name: string;
  readonly digest: Digest;
}
export interface SymlinkNode {
  readonly name: string;
  readonly target: string;
}
export interface Directory {
  readonly files: readonly FileNode[];
  readonly directories: readonly DirectoryNode[];
  readonly symlinks: readonly SymlinkNode[];
}

export const EMPTY_DIRECTORY: Directory = Object.freeze({ files: [], directories: [], symlinks: [] });

// ---------------------------------------------------------------- encoding
//
// Perf: sizes are computed first and every byte is written into one buffer, instead of nested
// writers per message; on the Linux tree (5,096 directories) this took tree decoding from ~40% of
// a hardlink checkout's main-thread time, mostly allocation and GC, to a few percent.

/** Bytes a varint of `v` (a non-negative safe integer) takes. */
export function varintLen(v: number): number {
  let n = 1;
  while (v > 0x7f) {
    v = Math.floor(v / 0x80);
    n++;
  }
  return n;
}

/** Writes `v` as a minimal varint at `pos`; returns the position after it. */
export function putVarint(buf: Buffer, pos: number, v: number): number {
  while (v > 0x7f) {
    buf[pos++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  buf[pos++] = v;
  return pos;
}

/** Encoded length of a Digest message: tag+len+64 hex, plus the size field when non-zero. */
export function digestLen(d: Digest): number {
  return 66 + (d.size !== 0 ? 1 + varintLen(d.size) : 0);
}

/** Writes a canonical Digest message's fields (not its own tag and length) at `pos`. */
export function putDigest(buf: Buffer, pos: number, d: Digest): number {
  buf[pos++] = (1 << 3) | 2;
  buf[pos++] = 64;
  pos += buf.write(d.hash, pos, 64, 'latin1');
  if (d.size !== 0) {
    buf[pos++] = (2 << 3) | 0;
    pos = putVarint(buf, pos, d.size);
  }
  return pos;
}

/** Encodes `dir` canonically. Entries must already be sorted; use `sortDirectory` when unsure. */
export function encodeDirectory(dir: Directory): Buffer {
  const { files, directories, symlinks } = dir;
  const nf = files.length;
  const nd = directories.length;
  const ns = symlinks.length;
  const names: number[] = new Array(nf + nd + ns);
  const bodies: number[] = new Array(nf + nd + ns);
  const targets: number[] = new Array(ns);
  let total = 0;
  for (let i = 0; i < nf; i++) {
    const f = files[i]!;
    const nl = Buffer.byteLength(f.name);
    const dl = digestLen(f.digest);
    const body = 1 + varintLen(nl) + nl + 1 + varintLen(dl) + dl + (f.executable ? 2 : 0);
    names[i] = nl;
    bodies[i] = body;
    total += 1 + varintLen(body) + body;
  }
  for (let i = 0; i < nd; i++) {
    const d = directories[i]!;
    const nl = Buffer.byteLength(d.name);
    const dl = digestLen(d.digest);
    const body = 1 + varintLen(nl) + nl + 1 + varintLen(dl) + dl;
    names[nf + i] = nl;
    bodies[nf + i] = body;
    total += 1 + varintLen(body) + body;
  }
  for (let i = 0; i < ns; i++) {
    const s = symlinks[i]!;
    const nl = Buffer.byteLength(s.name);
    const tl = Buffer.byteLength(s.target);
    const body = 1 + varintLen(nl) + nl + 1 + varintLen(tl) + tl;
    names[nf + nd + i] = nl;
    targets[i] = tl;
    bodies[nf + nd + i] = body;
    total += 1 + varintLen(body) + body;
  }
  const buf = Buffer.allocUnsafe(total);
  let pos = 0;
  for (let i = 0; i < nf; i++) {
    const f = files[i]!;
    buf[pos++] = (1 << 3) | 2;
    pos = putVarint(buf, pos, bodies[i]!);
    buf[pos++] = (1 << 3) | 2;
    pos = putVarint(buf, pos, names[i]!);
    pos += buf.write(f.name, pos, 'utf8');
    buf[pos++] = (2 << 3) | 2;
    pos = putVarint(buf, pos, digestLen(f.digest));
    pos = putDigest(buf, pos, f.digest);
    if (f.executable) {
      buf[pos++] = (4 << 3) | 0;
      buf[pos++] = 1;
    }
  }
  for (let i = 0; i < nd; i++) {
    const d = directories[i]!;
    buf[pos++] = (2 << 3) | 2;
    pos = putVarint(buf, pos, bodies[nf + i]!);
    buf[pos++] = (1 << 3) | 2;
    pos = putVarint(buf, pos, names[nf + i]!);
    pos += buf.write(d.name, pos, 'utf8');
    buf[pos++] = (2 << 3) | 2;
    pos = putVarint(buf, pos, digestLen(d.digest));
    pos = putDigest(buf, pos, d.digest);
  }
  for (let i = 0; i < ns; i++) {
    const s = symlinks[i]!;
    buf[pos++] = (3 << 3) | 2;
    pos = putVarint(buf, pos, bodies[nf + nd + i]!);
    buf[pos++] = (1 << 3) | 2;
    pos = putVarint(buf, pos, names[nf + nd + i]!);
    pos += buf.write(s.name, pos, 'utf8');
    buf[pos++] = (2 << 3) | 2;
    pos = putVarint(buf, pos, targets[i]!);
    pos += buf.write(s.target, pos, 'utf8');
  }
  return buf;
}

export function sortDirectory(dir: Directory): Directory {
  const byName = (a: { name: string }, b: { name: string }) => compareNames(a.name, b.name);
  return { files: [...dir.files].sort(byName), directories: [...dir.directories].sort(byName), symlinks: [...dir.symlinks].sort(byName) };
}

/** Encodes `dir` and returns its bytes with their digest. */
export function directoryBlob(dir: Directory): { bytes: Buffer; digest: Digest } {
  const bytes = encodeDirectory(dir);
  return { bytes, digest: digestOf(bytes) };
}

// ---------------------------------------------------------------- decoding
//
// Perf: one cursor over the buffer, no object per nested message, and canonical form checked
// while parsing (field order, no default values written, minimal varints, exact UTF-8) instead of
// re-encoding and comparing: decoding the Linux tree's 5,096 messages went from ~250 ms to ~110 ms
// in a fresh process, which is what every checkout is.

/**
 * A read position in a protobuf message. Subclasses change `fail` to throw their own error type
 * (the ActionResult codec in action-result.ts reuses it).
 */
export class Cursor {
  pos = 0;
  constructor(
    readonly buf: Buffer,
    readonly where: string,
  ) {}
  fail(why: string): never {
    throw new InvalidTreeError(`invalid Directory message ${this.where}: ${why}`, { digest: this.where.replace(/^in /, '') });
  }
  /** A minimally encoded varint (canonical: no redundant continuation bytes). */
  varint(): number {
    const buf = this.buf;
    let b = buf[this.pos++];
    if (b === undefined) this.fail('truncated varint');
    if (b < 0x80) return b;
    let result = b & 0x7f;
    let mul = 0x80;
    for (let i = 1; i < 8; i++) {
      b = buf[this.pos++];
      if (b === undefined) this.fail('truncated varint');
      result += (b & 0x7f) * mul;
      if (b < 0x80) {
        if (b === 0) this.fail('non-minimal varint');
        if (!Number.isSafeInteger(result)) this.fail('integer out of range');
        return result;
      }
      mul *= 0x80;
    }
    this.fail('varint too long');
  }
  /** Reads a length prefix and returns the end offset of the field, checked against `limit`. */
  end(limit: number): number {
    const len = this.varint();
    const end = this.pos + len;
    if (end > limit) this.fail('truncated field');
    return end;
  }
  /** A UTF-8 string field; bytes that are not valid UTF-8 are refused. */
  string(limit: number): string {
    const end = this.end(limit);
    const start = this.pos;
    const s = this.buf.toString('utf8', start, end);
    this.pos = end;
    // Invalid bytes decode to U+FFFD; only then is the exact check (re-encoding) needed.
    if (s.includes('\ufffd') && !Buffer.from(s, 'utf8').equals(this.buf.subarray(start, end))) this.fail('a name is not valid UTF-8');
    return s;
  }
}

// Field tags, (field number << 3) | wire type, as literals so entry kinds narrow by type.
export const TAG_FILE = 0x0a; // files = 1, length-delimited
export const TAG_DIR = 0x12; // directories = 2
export const TAG_LINK = 0x1a; // symlinks = 3
export const TAG_NAME = (1 << 3) | 2;
export const TAG_DIGEST = (2 << 3) | 2;
export const TAG_TARGET = (2 << 3) | 2;
export const TAG_EXEC = (4 << 3) | 0;
export const TAG_HASH = (1 << 3) | 2;
export const TAG_SIZE = (2 << 3) | 0;

/** A canonical Digest: the hash field, then the size field only when non-zero. */
export function readDigest(c: Cursor, limit: number): Digest {
  const end = c.end(limit);
  if (c.varint() !== TAG_HASH) c.fail('Digest does not start with its hash');
  // A hash is ASCII hex: read as latin1 (no UTF-8 decoding and check), which isHash then proves.
  // Perf: ~34,000 digests of the node_modules tree took ~70 ms of a checkout's load as UTF-8.
  const hashEnd = c.end(end);
  const hash = c.buf.toString('latin1', c.pos, hashEnd);
  c.pos = hashEnd;
  if (!isHash(hash)) c.fail(`digest hash '${hash.slice(0, 80)}' is not 64 lowercase hex characters`);
  let size = 0;
  if (c.pos < end) {
    if (c.varint() !== TAG_SIZE) c.fail('unknown field in Digest');
    size = c.varint();
    if (size === 0) c.fail('a zero size is written out (not canonical)');
  }
  if (c.pos !== end) c.fail('field overruns its message');
  return { hash, size };
}

/**
 * The digests of a Directory message's subdirectories, in order, read without decoding or checking
 * anything else (names, files, symlinks, order): for a server walking a tree for a client that
 * decodes and validates every message itself. Throws InvalidTreeError on bytes that do not parse.
 */
export function subdirectoryDigests(bytes: Uint8Array, where = 'message'): Digest[] {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const c: Cursor = new Cursor(buf, `in ${where}`);
  const out: Digest[] = [];
  while (c.pos < buf.length) {
    const tag = c.varint();
    if (tag !== TAG_FILE && tag !== TAG_DIR && tag !== TAG_LINK) c.fail(`unsupported field tag ${tag} in Directory`);
    const end = c.end(buf.length);
    if (tag === TAG_DIR) {
      if (c.varint() !== TAG_NAME) c.fail('an entry does not start with its name');
      c.pos = c.end(end);
      if (c.pos >= end || c.varint() !== TAG_DIGEST) c.fail('a directory entry has no digest');
      out.push(readDigest(c, end));
    }
    c.pos = end;
  }
  return out;
}

type Node = { kind: typeof TAG_FILE; node: FileNode } | { kind: typeof TAG_DIR; node: DirectoryNode } | { kind: typeof TAG_LINK; node: SymlinkNode };

/** One entry's fields, from just after its length prefix to `end`, checked canonical. */
function readEntry(c: Cursor, tag: number, end: number): Node {
  // Every entry starts with its name; the rest must follow in field order.
  if (c.varint() !== TAG_NAME) c.fail('an entry does not start with its name');
  const name = c.string(end);
  let out: Node;
  if (tag === TAG_LINK) {
    if (c.pos >= end || c.varint() !== TAG_TARGET) c.fail(`symlink '${name}' has no target`);
    const target = c.string(end);
    const bad = symlinkTargetProblem(target);
    if (bad) c.fail(`symlink '${name}': ${bad}`);
    out = { kind: TAG_LINK, node: { name, target } };
  } else {
    if (c.pos >= end || c.varint() !== TAG_DIGEST) c.fail(`entry '${name}' has no digest`);
    const digest = readDigest(c, end);
    if (tag === TAG_FILE) {
      let executable = false;
      if (c.pos < end) {
        if (c.varint() !== TAG_EXEC || c.varint() !== 1) c.fail(`file '${name}': unsupported field or is_executable not written as true`);
        executable = true;
      }
      out = { kind: TAG_FILE, node: { name, digest, executable } };
    } else {
      out = { kind: TAG_DIR, node: { name, digest } };
    }
  }
  if (c.pos !== end) c.fail(`unsupported field in entry '${name}'`);
  return out;
}

/**
 * Decodes and validates one `Directory` message. `where` names it in errors (usually its digest).
 * Refuses: unknown fields, node_properties, non-canonical bytes, invalid UTF-8, unsafe names,
 * unsorted or duplicate entries, empty or NUL-bearing symlink targets.
 */
export function decodeDirectory(bytes: Uint8Array, where = 'message'): Directory {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const c: Cursor = new Cursor(buf, `in ${where}`);
  const files: FileNode[] = [];
  const directories: DirectoryNode[] = [];
  const symlinks: SymlinkNode[] = [];
  const total = buf.length;
  let lastTag = 0;
  while (c.pos < total) {
    const tag = c.varint();
    if (tag !== TAG_FILE && tag !== TAG_DIR && tag !== TAG_LINK) c.fail(`unsupported field tag ${tag} in Directory`);
    if (tag < lastTag) c.fail('entries are not grouped files, directories, symlinks (not canonical)');
    lastTag = tag;
    const e = readEntry(c, tag, c.end(total));
    if (e.kind === TAG_FILE) files.push(e.node);
    else if (e.kind === TAG_DIR) directories.push(e.node);
    else symlinks.push(e.node);
  }
  const dir: Directory = { files, directories, symlinks };
  validateDirectory(dir, c);
  return dir;
}

// ---------------------------------------------------------------- raw entries
//
// Canonical encoding gives an unchanged entry the same bytes in two versions of a directory, so
// an update can compare entries as byte ranges and decode only those that differ. Perf: on the
// Linux tree with 1% of files changed, ~94,000 entry decodes (old and new versions of every
// changed directory) became ~1,600.

/** Offsets of each entry of a Directory message, grouped as in the message (files, dirs, links). */
export interface RawDirectory {
  readonly bytes: Buffer;
  readonly where: string;
  /** TAG_FILE / TAG_DIR / TAG_LINK per entry. */
  readonly kinds: Uint8Array;
  /** Byte range of the whole entry (its fields) and of its name. */
  readonly starts: Uint32Array;
  readonly ends: Uint32Array;
  readonly nameStarts: Uint32Array;
  readonly nameEnds: Uint32Array;
}

export const RAW_FILE = TAG_FILE;
export const RAW_DIR = TAG_DIR;
export const RAW_LINK = TAG_LINK;

/**
 * Splits a message into entries without decoding them, and checks what can be checked on bytes:
 * known entry kinds in group order, each entry starting with its name, names strictly increasing
 * within a group (UTF-8 byte order), and no name in two groups. Entries are validated in full by
 * `rawEntry` when a caller decodes them.
 */
export function splitDirectory(bytes: Uint8Array, where = 'message'): RawDirectory {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const c: Cursor = new Cursor(buf, `in ${where}`);
  const kinds: number[] = [];
  const starts: number[] = [];
  const ends: number[] = [];
  const nameStarts: number[] = [];
  const nameEnds: number[] = [];
  let lastTag = 0;
  while (c.pos < buf.length) {
    const tag = c.varint();
    if (tag !== TAG_FILE && tag !== TAG_DIR && tag !== TAG_LINK) c.fail(`unsupported field tag ${tag} in Directory`);
    if (tag < lastTag) c.fail('entries are not grouped files, directories, symlinks (not canonical)');
    const end = c.end(buf.length);
    const start = c.pos;
    if (c.varint() !== TAG_NAME) c.fail('an entry does not start with its name');
    const nameEnd = c.end(end);
    const n = kinds.length;
    if (tag === lastTag && n > 0 && compareBytes(buf, nameStarts[n - 1]!, nameEnds[n - 1]!, buf, c.pos, nameEnd) >= 0) {
      c.fail(`entries not sorted or duplicated (at '${buf.toString('utf8', c.pos, nameEnd)}')`);
    }
    lastTag = tag;
    kinds.push(tag);
    starts.push(start);
    ends.push(end);
    nameStarts.push(c.pos);
    nameEnds.push(nameEnd);
    c.pos = end;
  }
  const raw: RawDirectory = {
    bytes: buf,
    where,
    kinds: Uint8Array.from(kinds),
    starts: Uint32Array.from(starts),
    ends: Uint32Array.from(ends),
    nameStarts: Uint32Array.from(nameStarts),
    nameEnds: Uint32Array.from(nameEnds),
  };
  checkGroupsDisjoint(raw, c);
  return raw;
}

/** The head of one entry of a Directory message (see entryAt). */
export interface EntryHead {
  kind: number;
  /** Byte range of the entry's fields (after its tag and length) and of its name. */
  start: number;
  end: number;
  nameStart: number;
  nameEnd: number;
}

/**
 * The entry whose tag is at byte `pos` of a message, read without decoding it (nothing beyond its
 * framing is checked: `entryNodeAt` decodes and validates it). For walking a message already known
 * valid, such as the last checkout's version of a directory an update compares with.
 */
export function entryAt(buf: Buffer, where: string, pos: number, into: EntryHead): EntryHead {
  const c: Cursor = new Cursor(buf, `in ${where}`);
  c.pos = pos;
  const tag = c.varint();
  if (tag !== TAG_FILE && tag !== TAG_DIR && tag !== TAG_LINK) c.fail(`unsupported field tag ${tag} in Directory`);
  const end = c.end(buf.length);
  into.kind = tag;
  into.start = c.pos;
  into.end = end;
  if (c.varint() !== TAG_NAME) c.fail('an entry does not start with its name');
  into.nameEnd = c.end(end);
  into.nameStart = c.pos;
  return into;
}

/** Decodes and fully validates the entry `head` (from entryAt) of `buf`. */
export function entryNodeAt(buf: Buffer, where: string, head: EntryHead): Node {
  const c: Cursor = new Cursor(buf, `in ${where}`);
  c.pos = head.start;
  const e = readEntry(c, head.kind, head.end);
  const bad = decodedNameProblem(e.node.name);
  if (bad) c.fail(`entry: ${bad}`);
  return e;
}

/**
 * How many bytes from x[xs] on equal those from y[ys] on, looking at most `n`. The bytes are
 * compared by Buffer#compare (memcmp) over halving spans, so the long runs two versions of a
 * directory share cost a few native calls, not a JavaScript loop over every byte or entry
 * (Perf: figures at plan.ts reconcileKnown).
 */
export function commonPrefix(x: Buffer, xs: number, y: Buffer, ys: number, n: number): number {
  if (n <= 0 || x[xs] !== y[ys]) return 0;
  if (x.compare(y, ys, ys + n, xs, xs + n) === 0) return n;
  let lo = 0;
  let hi = n;
  while (hi - lo > 32) {
    const mid = (lo + hi) >>> 1;
    if (x.compare(y, ys + lo, ys + mid, xs + lo, xs + mid) === 0) lo = mid;
    else hi = mid;
  }
  while (lo < hi && x[xs + lo] === y[ys + lo]) lo++;
  return lo;
}

/** Byte order of the names of entry `i` of `a` and entry `j` of `b` (UTF-8 byte order is REAPI's). */
export function compareRawNames(a: RawDirectory, i: number, b: RawDirectory, j: number): number {
  return compareBytes(a.bytes, a.nameStarts[i]!, a.nameEnds[i]!, b.bytes, b.nameStarts[j]!, b.nameEnds[j]!);
}

/** True when entry `i` of `a` and entry `j` of `b` have identical bytes (same kind, name, content). */
export function sameRawEntry(a: RawDirectory, i: number, b: RawDirectory, j: number): boolean {
  const as = a.starts[i]!;
  const bs = b.starts[j]!;
  const len = a.ends[i]! - as;
  if (a.kinds[i] !== b.kinds[j] || b.ends[j]! - bs !== len) return false;
  const x = a.bytes;
  const y = b.bytes;
  for (let k = 0; k < len; k++) if (x[as + k] !== y[bs + k]) return false;
  return true;
}

/**
 * memcmp order of x[xs, xe) and y[ys, ye), a shorter prefix first: negative, zero or positive.
 *
 * Perf: names and entries are tens of bytes; Buffer#compare spends more on its call into C++ and
 * the checks of its five offsets than on the bytes (its offset checks and compareOffset were the
 * top of a profile of the Linux tree's 1% update, which splits and compares ~47,000 entries in
 * both versions of each changed directory). Planning that update in one process, warm: 43 ms of
 * CPU against 55 ms (medians of 4 runs of 15 plans each, interleaved, load 11 on 2 cores); the
 * whole `checkout` update, 0.37 s of user+sys CPU against 0.39 s (medians of 16 interleaved
 * runs, load 10-15; the two sets of 8: 0.34 s against 0.37 s, 0.39 s against 0.40 s).
 */
export function compareBytes(x: Uint8Array, xs: number, xe: number, y: Uint8Array, ys: number, ye: number): number {
  const xl = xe - xs;
  const yl = ye - ys;
  const n = xl < yl ? xl : yl;
  for (let k = 0; k < n; k++) {
    const d = x[xs + k]! - y[ys + k]!;
    if (d !== 0) return d;
  }
  return xl - yl;
}

/** Decodes and fully validates entry `i`. */
export function rawEntry(raw: RawDirectory, i: number): Node {
  const c: Cursor = new Cursor(raw.bytes, `in ${raw.where}`);
  c.pos = raw.starts[i]!;
  const e = readEntry(c, raw.kinds[i]!, raw.ends[i]!);
  const bad = decodedNameProblem(e.node.name);
  if (bad) c.fail(`entry: ${bad}`);
  return e;
}

function checkGroupsDisjoint(raw: RawDirectory, c: Cursor): void {
  // The groups are contiguous, in tag order (splitDirectory refuses any other order).
  const n = raw.kinds.length;
  let dirs = 0;
  while (dirs < n && raw.kinds[dirs] === TAG_FILE) dirs++;
  let links = dirs;
  while (links < n && raw.kinds[links] === TAG_DIR) links++;
  const dup = sharedNameAt(raw.bytes, raw.nameStarts, raw.nameEnds, 0, dirs, links, n);
  if (dup >= 0) c.fail(`duplicate entry '${raw.bytes.toString('utf8', raw.nameStarts[dup], raw.nameEnds[dup])}'`);
}

/**
 * An entry whose name (bytes [nameStarts, nameEnds) of `buf`) is also in another of the groups
 * [a, b), [b, c), [c, d), each sorted by compareBytes; -1 when no name is in two. A three-way merge:
 * a name in two groups shows as equal heads. Perf: no Set of every name, no allocation.
 */
export function sharedNameAt(buf: Uint8Array, ns: Uint32Array, ne: Uint32Array, a: number, b: number, c: number, d: number): number {
  let i = a;
  let j = b;
  let k = c;
  while ((i < b ? 1 : 0) + (j < c ? 1 : 0) + (k < d ? 1 : 0) >= 2) {
    let min = i < b ? i : -1;
    if (j < c) {
      const o = min < 0 ? -1 : compareBytes(buf, ns[j]!, ne[j]!, buf, ns[min]!, ne[min]!);
      if (o === 0) return j;
      if (o < 0) min = j;
    }
    if (k < d) {
      const o = min < 0 ? -1 : compareBytes(buf, ns[k]!, ne[k]!, buf, ns[min]!, ne[min]!);
      if (o === 0) return k;
      if (o < 0) min = k;
    }
    if (min === i) i++;
    else if (min === j) j++;
    else k++;
  }
  return -1;
}

/**
 * Names safe, each list strictly sorted (so no duplicate within it), and no name in two lists.
 * Perf: a three-way merge over the sorted lists instead of a Set of every name.
 */
function validateDirectory(dir: Directory, r: Cursor): void {
  const lists = [dir.files, dir.directories, dir.symlinks] as const;
  const kinds = ['file', 'directory', 'symlink'] as const;
  for (let k = 0; k < 3; k++) {
    const list = lists[k];
    for (let i = 0; i < list.length; i++) {
      const name = list[i]!.name;
      const bad = decodedNameProblem(name);
      if (bad) r.fail(`${kinds[k]} entry: ${bad}`);
      if (i > 0) {
        const order = compareNames(list[i - 1]!.name, name);
        if (order === 0) r.fail(`duplicate entry '${name}'`);
        if (order > 0) r.fail(`${kinds[k]} entries not sorted (at '${name}')`);
      }
    }
  }
  const [a, b, c] = lists;
  let i = 0;
  let j = 0;
  let k = 0;
  while ((i < a.length ? 1 : 0) + (j < b.length ? 1 : 0) + (k < c.length ? 1 : 0) >= 2) {
    const x = a[i]?.name;
    const y = b[j]?.name;
    const z = c[k]?.name;
    let min = x;
    if (min === undefined || (y !== undefined && compareNames(y, min) < 0)) min = y;
    if (min === undefined || (z !== undefined && compareNames(z, min) < 0)) min = z;
    const hits = (x === min ? 1 : 0) + (y === min ? 1 : 0) + (z === min ? 1 : 0);
    if (hits > 1) r.fail(`duplicate entry '${min}'`);
    if (x === min) i++;
    else if (y === min) j++;
    else k++;
  }
}
