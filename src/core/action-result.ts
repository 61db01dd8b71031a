/**
 * REAPI v2 `ActionResult` and `Tree` messages (build/bazel/remote/execution/v2/remote_execution.proto),
 * the values of the Bazel HTTP cache's action cache (`/ac/<sha256>`) and the whole-tree message an
 * `OutputDirectory` points at.
 *
 * Encoding is canonical: fields in tag order, default values left out, minimal varints, so one
 * value always has one byte string. Decoding is strict about what treecast relies on (wire types,
 * lengths, truncation, digests of 64 lowercase hex with a non-negative size, limits on message size
 * and repeated fields) and tolerant of the fields Bazel writes that treecast does not use
 * (`execution_metadata`, symlink outputs, inline `stdout_raw`/`contents`, fields added later), so a
 * server can validate real Bazel uploads with it. Built on the protobuf primitives of reapi.ts.
 *
 *   ActionResult      output_files = 2 (OutputFile), output_directories = 3 (OutputDirectory),
 *                     exit_code = 4, stdout_digest = 6, stderr_digest = 8
 *   OutputFile        path = 1, digest = 2, is_executable = 4
 *   OutputDirectory   path = 1, tree_digest = 3, is_topologically_sorted = 4, root_directory_digest = 5
 *   Tree              root = 1 (Directory), children = 2 (Directory, repeated)
 */
import { type Digest, digestOf } from './digest.js';
import { Cursor, type Directory, decodeDirectory, digestLen, putDigest, putVarint, readDigest, varintLen } from './reapi.js';
import { InvalidActionResultError, InvalidTreeError } from '../errors.js';

export interface OutputFile {
  readonly path: string;
  readonly digest: Digest;
  readonly executable: boolean;
}

export interface OutputDirectory {
  readonly path: string;
  /** The digest of a `Tree` message holding every Directory of the output. */
  readonly treeDigest: Digest;
  /** The digest of the root `Directory` message, when the writer set it (REAPI 2.3+). */
  readonly rootDirectoryDigest?: Digest;
  readonly topologicallySorted: boolean;
}

export interface ActionResult {
  readonly outputFiles: readonly OutputFile[];
  readonly outputDirectories: readonly OutputDirectory[];
  readonly exitCode: number;
  readonly stdoutDigest?: Digest;
  readonly stderrDigest?: Digest;
}

/** Largest ActionResult accepted: Bazel's entries are kilobytes; inline outputs stay well below. */
export const MAX_ACTION_RESULT_BYTES = 16 * 1024 * 1024;
/** Most outputs of each kind (files, directories, symlinks) one ActionResult may list. */
export const MAX_ACTION_OUTPUTS = 100_000;
/** Largest Tree message accepted (the Linux tree's is ~8 MB). */
export const MAX_TREE_BYTES = 512 * 1024 * 1024;
/** Most `children` one Tree message may hold (the Linux tree has 5,096 directories). */
export const MAX_TREE_CHILDREN = 1_000_000;

// Wire types and field tags: (field number << 3) | wire type.
const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;
const AR_OUTPUT_FILE = (2 << 3) | LEN;
const AR_OUTPUT_DIRECTORY = (3 << 3) | LEN;
const AR_EXIT_CODE = (4 << 3) | VARINT;
const AR_STDOUT_DIGEST = (6 << 3) | LEN;
const AR_STDERR_DIGEST = (8 << 3) | LEN;
const AR_OUTPUT_FILE_SYMLINK = 10;
const AR_OUTPUT_DIRECTORY_SYMLINK = 11;
const AR_OUTPUT_SYMLINK = 12;
const PATH = (1 << 3) | LEN;
const FILE_DIGEST = (2 << 3) | LEN;
const FILE_EXECUTABLE = (4 << 3) | VARINT;
const DIR_TREE_DIGEST = (3 << 3) | LEN;
const DIR_SORTED = (4 << 3) | VARINT;
const DIR_ROOT_DIGEST = (5 << 3) | LEN;
const TREE_ROOT = (1 << 3) | LEN;
const TREE_CHILD = (2 << 3) | LEN;

// ---------------------------------------------------------------- encoding

function digestFieldLen(d: Digest): number {
  const n = digestLen(d);
  return 1 + varintLen(n) + n;
}

function putDigestField(buf: Buffer, pos: number, tag: number, d: Digest): number {
  buf[pos++] = tag;
  pos = putVarint(buf, pos, digestLen(d));
  return putDigest(buf, pos, d);
}

function stringFieldLen(s: string): number {
  const n = Buffer.byteLength(s);
  return n === 0 ? 0 : 1 + varintLen(n) + n;
}

function putStringField(buf: Buffer, pos: number, tag: number, s: string): number {
  const n = Buffer.byteLength(s);
  if (n === 0) return pos;
  buf[pos++] = tag;
  pos = putVarint(buf, pos, n);
  return pos + buf.write(s, pos, 'utf8');
}

function outputFileLen(f: OutputFile): number {
  return stringFieldLen(f.path) + digestFieldLen(f.digest) + (f.executable ? 2 : 0);
}

function outputDirectoryLen(d: OutputDirectory): number {
  return stringFieldLen(d.path) + digestFieldLen(d.treeDigest) + (d.topologicallySorted ? 2 : 0) +
    (d.rootDirectoryDigest ? digestFieldLen(d.rootDirectoryDigest) : 0);
}

/** int32 as protobuf writes it: negative values sign-extended to ten bytes. */
function int32Bytes(v: number): Buffer {
  let x = BigInt.asUintN(64, BigInt(v));
  const out: number[] = [];
  while (x > 0x7fn) {
    out.push(Number(x & 0x7fn) | 0x80);
    x >>= 7n;
  }
  out.push(Number(x));
  return Buffer.from(out);
}

/** Encodes `ar` canonically. */
export function encodeActionResult(ar: ActionResult): Buffer {
  if (!Number.isInteger(ar.exitCode) || ar.exitCode < -0x80000000 || ar.exitCode > 0x7fffffff) {
    throw new InvalidActionResultError(`exit code ${ar.exitCode} is not a 32-bit integer`);
  }
  const exitCode = ar.exitCode === 0 ? null : int32Bytes(ar.exitCode);
  let total = 0;
  for (const f of ar.outputFiles) {
    const n = outputFileLen(f);
    total += 1 + varintLen(n) + n;
  }
  for (const d of ar.outputDirectories) {
    const n = outputDirectoryLen(d);
    total += 1 + varintLen(n) + n;
  }
  if (exitCode) total += 1 + exitCode.length;
  if (ar.stdoutDigest) total += digestFieldLen(ar.stdoutDigest);
  if (ar.stderrDigest) total += digestFieldLen(ar.stderrDigest);

  const buf = Buffer.allocUnsafe(total);
  let pos = 0;
  for (const f of ar.outputFiles) {
    buf[pos++] = AR_OUTPUT_FILE;
    pos = putVarint(buf, pos, outputFileLen(f));
    pos = putStringField(buf, pos, PATH, f.path);
    pos = putDigestField(buf, pos, FILE_DIGEST, f.digest);
    if (f.executable) {
      buf[pos++] = FILE_EXECUTABLE;
      buf[pos++] = 1;
    }
  }
  for (const d of ar.outputDirectories) {
    buf[pos++] = AR_OUTPUT_DIRECTORY;
    pos = putVarint(buf, pos, outputDirectoryLen(d));
    pos = putStringField(buf, pos, PATH, d.path);
    pos = putDigestField(buf, pos, DIR_TREE_DIGEST, d.treeDigest);
    if (d.topologicallySorted) {
      buf[pos++] = DIR_SORTED;
      buf[pos++] = 1;
    }
    if (d.rootDirectoryDigest) pos = putDigestField(buf, pos, DIR_ROOT_DIGEST, d.rootDirectoryDigest);
  }
  if (exitCode) {
    buf[pos++] = AR_EXIT_CODE;
    pos += exitCode.copy(buf, pos);
  }
  if (ar.stdoutDigest) pos = putDigestField(buf, pos, AR_STDOUT_DIGEST, ar.stdoutDigest);
  if (ar.stderrDigest) pos = putDigestField(buf, pos, AR_STDERR_DIGEST, ar.stderrDigest);
  if (pos !== total) throw new Error(`ActionResult encoding wrote ${pos} of ${total} bytes`);
  return buf;
}

/**
 * Encodes a `Tree` from the bytes of canonical Directory messages: `root`, then `children` in the
 * order given (callers pass each distinct directory once, parents before children).
 */
export function encodeTree(root: Uint8Array, children: readonly Uint8Array[]): Buffer {
  const parts: Uint8Array[] = [];
  const head = (tag: number, len: number): Buffer => {
    const h = Buffer.allocUnsafe(1 + varintLen(len));
    h[0] = tag;
    putVarint(h, 1, len);
    return h;
  };
  parts.push(head(TREE_ROOT, root.byteLength), root);
  for (const c of children) parts.push(head(TREE_CHILD, c.byteLength), c);
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------- decoding

/** A Cursor that reports ActionResult problems, and reads the wire types Directory never uses. */
class MessageCursor extends Cursor {
  constructor(
    buf: Buffer,
    where: string,
    private readonly what: string,
    private readonly ErrorClass: typeof InvalidActionResultError | typeof InvalidTreeError,
  ) {
    super(buf, where);
  }
  override fail(why: string): never {
    throw new this.ErrorClass(`invalid ${this.what} ${this.where}: ${why}`, { digest: this.where.replace(/^in /, '') });
  }
  /** A varint of up to ten bytes as protobuf writes int32/int64; returns its low 32 bits, signed. */
  int32(): number {
    let low = 0;
    for (let i = 0; i < 10; i++) {
      const b = this.buf[this.pos++];
      if (b === undefined) this.fail('truncated varint');
      if (i < 5) low += (b & 0x7f) * 2 ** (7 * i);
      if (b < 0x80) return low % 2 ** 32 >= 2 ** 31 ? (low % 2 ** 32) - 2 ** 32 : low % 2 ** 32;
    }
    this.fail('varint longer than ten bytes');
  }
  /** Skips one field of a kind treecast does not use, after its tag. */
  skip(tag: number, limit: number): void {
    const wire = tag & 7;
    if (wire === VARINT) this.int32();
    else if (wire === I64) this.pos += 8;
    else if (wire === LEN) this.pos = this.end(limit);
    else if (wire === I32) this.pos += 4;
    else this.fail(`field ${tag >>> 3} has unsupported wire type ${wire}`);
    if (this.pos > limit) this.fail('truncated field');
  }
  /** A field tag: a field number above zero. */
  tag(): number {
    const tag = this.varint();
    if (tag >>> 3 === 0) this.fail('field number 0');
    return tag;
  }
  bool(): boolean {
    const v = this.int32();
    if (v !== 0 && v !== 1) this.fail(`boolean field holds ${v}`);
    return v === 1;
  }
}

/** Relative, non-empty, no NUL: what bazel-remote also requires of an output path. */
function checkOutputPath(c: MessageCursor, path: string, kind: string): void {
  if (path.length === 0 && kind === 'file') c.fail('an output file has an empty path');
  if (path.startsWith('/')) c.fail(`${kind} output path '${path.slice(0, 80)}' is absolute`);
  if (path.includes('\0')) c.fail(`${kind} output path contains a NUL byte`);
}

function readOutputFile(c: MessageCursor, end: number): OutputFile {
  let path = '';
  let digest: Digest | undefined;
  let executable = false;
  while (c.pos < end) {
    const tag = c.tag();
    if (tag === PATH) path = c.string(end);
    else if (tag === FILE_DIGEST) {
      if (digest) c.fail('an output file has two digests');
      digest = readDigest(c, end);
    } else if (tag === FILE_EXECUTABLE) executable = c.bool();
    else c.skip(tag, end); // contents (inline bytes), node_properties
  }
  if (c.pos !== end) c.fail('field overruns its output file');
  checkOutputPath(c, path, 'file');
  if (!digest) c.fail(`output file '${path.slice(0, 80)}' has no digest`);
  return { path, digest, executable };
}

function readOutputDirectory(c: MessageCursor, end: number): OutputDirectory {
  let path = '';
  let treeDigest: Digest | undefined;
  let rootDirectoryDigest: Digest | undefined;
  let topologicallySorted = false;
  while (c.pos < end) {
    const tag = c.tag();
    if (tag === PATH) path = c.string(end);
    else if (tag === DIR_TREE_DIGEST) {
      if (treeDigest) c.fail('an output directory has two tree digests');
      treeDigest = readDigest(c, end);
    } else if (tag === DIR_ROOT_DIGEST) {
      if (rootDirectoryDigest) c.fail('an output directory has two root directory digests');
      rootDirectoryDigest = readDigest(c, end);
    } else if (tag === DIR_SORTED) topologicallySorted = c.bool();
    else c.skip(tag, end);
  }
  if (c.pos !== end) c.fail('field overruns its output directory');
  checkOutputPath(c, path, 'directory');
  if (!treeDigest) c.fail(`output directory '${path.slice(0, 80)}' has no tree digest`);
  return rootDirectoryDigest ? { path, treeDigest, rootDirectoryDigest, topologicallySorted } : { path, treeDigest, topologicallySorted };
}

/**
 * Decodes and checks one `ActionResult`. `where` names it in errors (usually its AC key). Throws
 * InvalidActionResultError on anything malformed; skips fields treecast does not use.
 */
export function decodeActionResult(bytes: Uint8Array, where = 'message'): ActionResult {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const c: MessageCursor = new MessageCursor(buf, `in ${where}`, 'ActionResult', InvalidActionResultError);
  if (buf.length > MAX_ACTION_RESULT_BYTES) c.fail(`${buf.length} bytes, more than the ${MAX_ACTION_RESULT_BYTES} accepted`);
  const outputFiles: OutputFile[] = [];
  const outputDirectories: OutputDirectory[] = [];
  let symlinks = 0;
  let exitCode = 0;
  let stdoutDigest: Digest | undefined;
  let stderrDigest: Digest | undefined;
  const total = buf.length;
  while (c.pos < total) {
    const tag = c.tag();
    if (tag === AR_OUTPUT_FILE) {
      if (outputFiles.length === MAX_ACTION_OUTPUTS) c.fail(`more than ${MAX_ACTION_OUTPUTS} output files`);
      outputFiles.push(readOutputFile(c, c.end(total)));
    } else if (tag === AR_OUTPUT_DIRECTORY) {
      if (outputDirectories.length === MAX_ACTION_OUTPUTS) c.fail(`more than ${MAX_ACTION_OUTPUTS} output directories`);
      outputDirectories.push(readOutputDirectory(c, c.end(total)));
    } else if (tag === AR_EXIT_CODE) {
      exitCode = c.int32();
    } else if (tag === AR_STDOUT_DIGEST) {
      if (stdoutDigest) c.fail('two stdout digests');
      stdoutDigest = readDigest(c, total);
    } else if (tag === AR_STDERR_DIGEST) {
      if (stderrDigest) c.fail('two stderr digests');
      stderrDigest = readDigest(c, total);
    } else {
      const field = tag >>> 3;
      if (field === AR_OUTPUT_FILE_SYMLINK || field === AR_OUTPUT_DIRECTORY_SYMLINK || field === AR_OUTPUT_SYMLINK) {
        if (++symlinks > MAX_ACTION_OUTPUTS) c.fail(`more than ${MAX_ACTION_OUTPUTS} output symlinks`);
      }
      c.skip(tag, total); // stdout_raw, stderr_raw, execution_metadata, symlink outputs, later fields
    }
  }
  return {
    outputFiles,
    outputDirectories,
    exitCode,
    ...(stdoutDigest ? { stdoutDigest } : {}),
    ...(stderrDigest ? { stderrDigest } : {}),
  };
}

/**
 * Every digest `ar` references: output files, each output directory's Tree message (and its root
 * Directory when set), stdout and stderr. Each once, in that order. The empty blob may be among
 * them (a store always holds it).
 */
export function actionResultBlobs(ar: ActionResult): Digest[] {
  const seen = new Set<string>();
  const out: Digest[] = [];
  const add = (d: Digest | undefined): void => {
    if (!d) return;
    const key = `${d.hash}/${d.size}`;
    if (seen.has(key)) return;
    seen.add(key);
    out.push(d);
  };
  for (const f of ar.outputFiles) add(f.digest);
  for (const d of ar.outputDirectories) {
    add(d.treeDigest);
    add(d.rootDirectoryDigest);
  }
  add(ar.stdoutDigest);
  add(ar.stderrDigest);
  return out;
}

/** One Directory of a Tree message: its bytes as embedded, their digest, the decoded message. */
export interface TreeDirectory {
  readonly digest: Digest;
  readonly bytes: Buffer;
  readonly directory: Directory;
}

export interface Tree {
  readonly root: TreeDirectory;
  readonly children: readonly TreeDirectory[];
}

/**
 * Decodes a `Tree` message. Every embedded Directory is decoded with the strict Directory decoder
 * (canonical bytes, safe names), so its digest is the SHA-256 of the bytes as embedded. Unknown
 * fields are refused: a Tree has only these two.
 */
export function decodeTree(bytes: Uint8Array, where = 'message'): Tree {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const c: MessageCursor = new MessageCursor(buf, `in ${where}`, 'Tree message', InvalidTreeError);
  if (buf.length > MAX_TREE_BYTES) c.fail(`${buf.length} bytes, more than the ${MAX_TREE_BYTES} accepted`);
  const total = buf.length;
  // The count is checked before any Directory is hashed or decoded: a hostile Tree costs little.
  let count = 0;
  while (c.pos < total) {
    const tag = c.tag();
    if (tag !== TREE_ROOT && tag !== TREE_CHILD) c.fail(`unsupported field tag ${tag} in Tree`);
    c.pos = c.end(total);
    if (++count > MAX_TREE_CHILDREN + 1) c.fail(`more than ${MAX_TREE_CHILDREN} child directories`);
  }
  c.pos = 0;
  let root: TreeDirectory | undefined;
  const children: TreeDirectory[] = [];
  while (c.pos < total) {
    const tag = c.tag();
    if (tag !== TREE_ROOT && tag !== TREE_CHILD) c.fail(`unsupported field tag ${tag} in Tree`);
    const end = c.end(total);
    const dirBytes = buf.subarray(c.pos, end);
    c.pos = end;
    const digest = digestOf(dirBytes);
    const entry: TreeDirectory = { digest, bytes: dirBytes, directory: decodeDirectory(dirBytes, `${digest.hash}/${digest.size} (in ${where})`) };
    if (tag === TREE_ROOT) {
      if (root) c.fail('two root directories');
      root = entry;
    } else {
      if (children.length === MAX_TREE_CHILDREN) c.fail(`more than ${MAX_TREE_CHILDREN} child directories`);
      children.push(entry);
    }
  }
  if (!root) c.fail('no root directory');
  return { root, children };
}

/**
 * Maps every Directory reachable from the Tree's root to its message, checking that each directory
 * reference (digest and size) resolves to a child of the Tree. Children nothing references are left
 * out; duplicates are kept once. Throws InvalidTreeError naming the missing digest.
 */
export function treeDirectories(tree: Tree, where = 'message'): Map<string, TreeDirectory> {
  const byHash = new Map<string, TreeDirectory>();
  for (const child of tree.children) byHash.set(child.digest.hash, child);
  byHash.set(tree.root.digest.hash, tree.root);
  const reachable = new Map<string, TreeDirectory>([[tree.root.digest.hash, tree.root]]);
  const queue: TreeDirectory[] = [tree.root];
  for (let i = 0; i < queue.length; i++) {
    for (const node of queue[i]!.directory.directories) {
      if (reachable.has(node.digest.hash)) continue;
      const child = byHash.get(node.digest.hash);
      if (!child || child.digest.size !== node.digest.size) {
        throw new InvalidTreeError(
          `invalid Tree message in ${where}: directory '${node.name}' (${node.digest.hash}/${node.digest.size}) is not in it`,
          { digest: `${node.digest.hash}/${node.digest.size}` },
        );
      }
      reachable.set(node.digest.hash, child);
      queue.push(child);
    }
  }
  return reachable;
}
