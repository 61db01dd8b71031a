/**
 * Canonical REAPI v2 `Directory` messages (build/bazel/remote/execution/v2/remote_execution.proto).
 *
 * Hand-written rather than generated: the four messages use a handful of fields, and a strict
 * decoder must refuse what a general protobuf library accepts (unknown fields, fields out of
 * order, default values written out, unsorted or duplicate names). Decoding re-encodes and compares
 * bytes, so any message accepted here hashes to the digest it was stored under.
 */
import { type Digest, digestOf, isHash } from './digest.js';
import { compareNames, nameProblem, symlinkTargetProblem } from './names.js';
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

class Writer {
  private buf = Buffer.allocUnsafe(256);
  private pos = 0;

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  varint(v: number): void {
    this.ensure(10);
    while (v > 0x7f) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
  }
  bytes(field: number, data: Uint8Array): void {
    this.varint((field << 3) | 2);
    this.varint(data.length);
    this.ensure(data.length);
    this.buf.set(data, this.pos);
    this.pos += data.length;
  }
  string(field: number, s: string): void {
    this.bytes(field, Buffer.from(s, 'utf8'));
  }
  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

function encodeDigest(d: Digest): Buffer {
  const w = new Writer();
  w.string(1, d.hash);
  if (d.size !== 0) {
    w.varint((2 << 3) | 0);
    w.varint(d.size);
  }
  return w.finish();
}

/** Encodes `dir` canonically. Entries must already be sorted; use `sortDirectory` when unsure. */
export function encodeDirectory(dir: Directory): Buffer {
  const w = new Writer();
  for (const f of dir.files) {
    const n = new Writer();
    n.string(1, f.name);
    n.bytes(2, encodeDigest(f.digest));
    if (f.executable) {
      n.varint((4 << 3) | 0);
      n.varint(1);
    }
    w.bytes(1, n.finish());
  }
  for (const d of dir.directories) {
    const n = new Writer();
    n.string(1, d.name);
    n.bytes(2, encodeDigest(d.digest));
    w.bytes(2, n.finish());
  }
  for (const s of dir.symlinks) {
    const n = new Writer();
    n.string(1, s.name);
    n.string(2, s.target);
    w.bytes(3, n.finish());
  }
  return Buffer.from(w.finish());
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

const utf8 = new TextDecoder('utf-8', { fatal: true });

class Reader {
  pos = 0;
  constructor(
    readonly buf: Uint8Array,
    readonly where: string,
  ) {}
  done(): boolean {
    return this.pos >= this.buf.length;
  }
  fail(why: string): never {
    throw new InvalidTreeError(`invalid Directory message ${this.where}: ${why}`, { digest: this.where.replace(/^in /, '') });
  }
  varint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) this.fail('truncated varint');
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * mul;
      if (b < 0x80) {
        if (!Number.isSafeInteger(result)) this.fail('integer out of range');
        return result;
      }
      mul *= 0x80;
    }
    this.fail('varint too long');
  }
  bytes(): Uint8Array {
    const len = this.varint();
    if (this.pos + len > this.buf.length) this.fail('truncated field');
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }
  string(): string {
    try {
      return utf8.decode(this.bytes());
    } catch (e) {
      if (e instanceof InvalidTreeError) throw e;
      this.fail('string is not valid UTF-8');
    }
  }
}

function decodeDigest(r: Reader): Digest {
  const sub = new Reader(r.bytes(), r.where);
  let hash = '';
  let size = 0;
  while (!sub.done()) {
    const tag = sub.varint();
    if (tag === ((1 << 3) | 2)) hash = sub.string();
    else if (tag === ((2 << 3) | 0)) size = sub.varint();
    else sub.fail(`unknown field tag ${tag} in Digest`);
  }
  if (!isHash(hash)) r.fail(`digest hash '${hash.slice(0, 80)}' is not 64 lowercase hex characters`);
  return { hash, size };
}

/**
 * Decodes and validates one `Directory` message. `where` names it in errors (usually its digest).
 * Refuses: unknown fields, node_properties, non-canonical bytes, unsafe names, unsorted or duplicate
 * entries, empty or NUL-bearing symlink targets.
 */
export function decodeDirectory(bytes: Uint8Array, where = 'message'): Directory {
  const r: Reader = new Reader(bytes, `in ${where}`);
  const files: FileNode[] = [];
  const directories: DirectoryNode[] = [];
  const symlinks: SymlinkNode[] = [];
  while (!r.done()) {
    const tag = r.varint();
    if (tag === ((1 << 3) | 2)) {
      const n = new Reader(r.bytes(), r.where);
      let name = '';
      let digest: Digest | undefined;
      let executable = false;
      while (!n.done()) {
        const t = n.varint();
        if (t === ((1 << 3) | 2)) name = n.string();
        else if (t === ((2 << 3) | 2)) digest = decodeDigest(n);
        else if (t === ((4 << 3) | 0)) executable = n.varint() !== 0;
        else n.fail(`unsupported field tag ${t} in FileNode '${name}'`);
      }
      if (!digest) r.fail(`file '${name}' has no digest`);
      files.push({ name, digest, executable });
    } else if (tag === ((2 << 3) | 2)) {
      const n = new Reader(r.bytes(), r.where);
      let name = '';
      let digest: Digest | undefined;
      while (!n.done()) {
        const t = n.varint();
        if (t === ((1 << 3) | 2)) name = n.string();
        else if (t === ((2 << 3) | 2)) digest = decodeDigest(n);
        else n.fail(`unsupported field tag ${t} in DirectoryNode '${name}'`);
      }
      if (!digest) r.fail(`directory '${name}' has no digest`);
      directories.push({ name, digest });
    } else if (tag === ((3 << 3) | 2)) {
      const n = new Reader(r.bytes(), r.where);
      let name = '';
      let target = '';
      while (!n.done()) {
        const t = n.varint();
        if (t === ((1 << 3) | 2)) name = n.string();
        else if (t === ((2 << 3) | 2)) target = n.string();
        else n.fail(`unsupported field tag ${t} in SymlinkNode '${name}'`);
      }
      const bad = symlinkTargetProblem(target);
      if (bad) r.fail(`symlink '${name}': ${bad}`);
      symlinks.push({ name, target });
    } else {
      r.fail(`unsupported field tag ${tag} in Directory`);
    }
  }
  const dir: Directory = { files, directories, symlinks };
  validateDirectory(dir, r);
  if (Buffer.compare(encodeDirectory(dir), bytes) !== 0) r.fail('not canonically encoded');
  return dir;
}

function validateDirectory(dir: Directory, r: Reader): void {
  const seen = new Set<string>();
  const check = (list: readonly { name: string }[], kind: string) => {
    for (let i = 0; i < list.length; i++) {
      const name = list[i]!.name;
      const bad = nameProblem(name);
      if (bad) r.fail(`${kind} entry: ${bad}`);
      if (seen.has(name)) r.fail(`duplicate entry '${name}'`);
      if (i > 0 && compareNames(list[i - 1]!.name, name) > 0) r.fail(`${kind} entries not sorted (at '${name}')`);
      seen.add(name);
    }
  };
  check(dir.files, 'file');
  check(dir.directories, 'directory');
  check(dir.symlinks, 'symlink');
}
