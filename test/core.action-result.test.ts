import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import {
  type ActionResult,
  MAX_ACTION_OUTPUTS,
  MAX_ACTION_RESULT_BYTES,
  MAX_TREE_CHILDREN,
  actionResultBlobs,
  decodeActionResult,
  decodeTree,
  encodeActionResult,
  encodeTree,
  treeDirectories,
} from '../src/core/action-result.js';
import { type Digest, EMPTY_DIGEST, formatDigest, parseDigest } from '../src/core/digest.js';
import { directoryBlob, encodeDirectory } from '../src/core/reapi.js';
import { InvalidActionResultError, InvalidTreeError } from '../src/errors.js';

// protobufjs, an independent protobuf implementation, checks the codec on random messages; the
// committed vectors were made with it too (test/fixtures/make-action-result-vectors.mjs).
const protobuf = createRequire(import.meta.url)('protobufjs') as typeof import('protobufjs');

interface ArVector {
  name: string;
  canonical: boolean;
  hex: string;
  decoded: {
    outputFiles: { path: string; digest: string; executable: boolean }[];
    outputDirectories: { path: string; treeDigest: string; rootDirectoryDigest?: string; topologicallySorted: boolean }[];
    exitCode: number;
    stdoutDigest?: string;
    stderrDigest?: string;
  };
}
interface TreeVector {
  name: string;
  hex: string;
  root_digest: string;
  children: string[];
  tree_digest: string;
}
const vectors = JSON.parse(fs.readFileSync(new URL('../../test/fixtures/reapi-action-results.json', import.meta.url), 'utf8')) as {
  action_results: ArVector[];
  trees: TreeVector[];
};

function fromVector(v: ArVector['decoded']): ActionResult {
  return {
    outputFiles: v.outputFiles.map((f) => ({ path: f.path, digest: parseDigest(f.digest), executable: f.executable })),
    outputDirectories: v.outputDirectories.map((d) => ({
      path: d.path,
      treeDigest: parseDigest(d.treeDigest),
      ...(d.rootDirectoryDigest ? { rootDirectoryDigest: parseDigest(d.rootDirectoryDigest) } : {}),
      topologicallySorted: d.topologicallySorted,
    })),
    exitCode: v.exitCode,
    ...(v.stdoutDigest ? { stdoutDigest: parseDigest(v.stdoutDigest) } : {}),
    ...(v.stderrDigest ? { stderrDigest: parseDigest(v.stderrDigest) } : {}),
  };
}

for (const v of vectors.action_results) {
  test(`golden ActionResult '${v.name}': decodes to the expected value${v.canonical ? ' and re-encodes byte for byte' : ''}`, () => {
    const bytes = Buffer.from(v.hex, 'hex');
    const expected = fromVector(v.decoded);
    assert.deepEqual(decodeActionResult(bytes), expected);
    if (v.canonical) assert.equal(encodeActionResult(expected).toString('hex'), v.hex);
  });
}

for (const v of vectors.trees) {
  test(`golden Tree '${v.name}': decodes, every Directory resolves, re-encodes byte for byte`, () => {
    const bytes = Buffer.from(v.hex, 'hex');
    const tree = decodeTree(bytes);
    assert.equal(formatDigest(tree.root.digest), v.root_digest);
    assert.deepEqual(tree.children.map((c) => formatDigest(c.digest)), v.children);
    const all = treeDirectories(tree);
    assert.equal(all.size, 1 + new Set(v.children).size);
    assert.equal(encodeTree(tree.root.bytes, tree.children.map((c) => c.bytes)).toString('hex'), v.hex);
  });
}

// ---------------------------------------------------------------- random messages vs protobufjs

const schema = protobuf.parse(`
syntax = "proto3";
message Digest { string hash = 1; int64 size_bytes = 2; }
message OutputFile { string path = 1; Digest digest = 2; bool is_executable = 4; }
message OutputDirectory { string path = 1; Digest tree_digest = 3; bool is_topologically_sorted = 4; Digest root_directory_digest = 5; }
message ActionResult {
  repeated OutputFile output_files = 2; repeated OutputDirectory output_directories = 3; int32 exit_code = 4;
  Digest stdout_digest = 6; Digest stderr_digest = 8;
}`).root.lookupType('ActionResult');

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function randomResult(r: () => number): ActionResult {
  const digest = (): Digest => ({
    hash: Array.from({ length: 64 }, () => '0123456789abcdef'[Math.floor(r() * 16)]).join(''),
    size: r() < 0.2 ? 0 : Math.floor(r() ** 3 * 2 ** 40),
  });
  const path = (): string => ['a', 'bazel-out/x', 'd/é/文件'][Math.floor(r() * 3)]! + (r() < 0.5 ? '/f' : '');
  const files = Array.from({ length: Math.floor(r() * 4) }, () => ({ path: path(), digest: digest(), executable: r() < 0.5 }));
  const dirs = Array.from({ length: Math.floor(r() * 3) }, () => {
    const root = r() < 0.5 ? { rootDirectoryDigest: digest() } : {};
    return { path: r() < 0.2 ? '' : path(), treeDigest: digest(), ...root, topologicallySorted: r() < 0.5 };
  });
  const exitCodes = [0, 0, 1, 255, -1, -2147483648, 2147483647];
  return {
    outputFiles: files,
    outputDirectories: dirs,
    exitCode: exitCodes[Math.floor(r() * exitCodes.length)]!,
    ...(r() < 0.5 ? { stdoutDigest: digest() } : {}),
    ...(r() < 0.5 ? { stderrDigest: digest() } : {}),
  };
}

function toProtobufJs(ar: ActionResult): Record<string, unknown> {
  // proto3 leaves defaults out; protobufjs writes any field that is set, so omit them here.
  const d = (x: Digest) => (x.size ? { hash: x.hash, sizeBytes: x.size } : { hash: x.hash });
  const o: Record<string, unknown> = {};
  if (ar.outputFiles.length) o.outputFiles = ar.outputFiles.map((f) => ({ ...(f.path ? { path: f.path } : {}), digest: d(f.digest), ...(f.executable ? { isExecutable: true } : {}) }));
  if (ar.outputDirectories.length) {
    o.outputDirectories = ar.outputDirectories.map((x) => ({
      ...(x.path ? { path: x.path } : {}),
      treeDigest: d(x.treeDigest),
      ...(x.topologicallySorted ? { isTopologicallySorted: true } : {}),
      ...(x.rootDirectoryDigest ? { rootDirectoryDigest: d(x.rootDirectoryDigest) } : {}),
    }));
  }
  if (ar.exitCode) o.exitCode = ar.exitCode;
  if (ar.stdoutDigest) o.stdoutDigest = d(ar.stdoutDigest);
  if (ar.stderrDigest) o.stderrDigest = d(ar.stderrDigest);
  return o;
}

test('random ActionResults: treecast and protobufjs write the same bytes, and each decodes the other', () => {
  const r = rng(8);
  for (let i = 0; i < 500; i++) {
    const ar = randomResult(r);
    const ours = encodeActionResult(ar);
    const theirs = Buffer.from(schema.encode(schema.fromObject(toProtobufJs(ar))).finish());
    assert.equal(ours.toString('hex'), theirs.toString('hex'), `message ${i}`);
    assert.deepEqual(decodeActionResult(theirs), ar);
    const back = schema.toObject(schema.decode(ours), { longs: Number, defaults: false });
    assert.deepEqual(back, toProtobufJs(ar));
  }
});

test('actionResultBlobs lists every referenced digest once: files, trees, roots, stdout, stderr', () => {
  const d = (c: string, size: number): Digest => ({ hash: c.repeat(64), size });
  const ar: ActionResult = {
    outputFiles: [{ path: 'a', digest: d('1', 1), executable: false }, { path: 'b', digest: d('1', 1), executable: true }],
    outputDirectories: [
      { path: 'x', treeDigest: d('2', 2), rootDirectoryDigest: d('3', 3), topologicallySorted: true },
      { path: 'y', treeDigest: d('4', 4), topologicallySorted: false },
    ],
    exitCode: 0,
    stdoutDigest: d('5', 5),
    stderrDigest: EMPTY_DIGEST,
  };
  assert.deepEqual(actionResultBlobs(ar).map(formatDigest), [d('1', 1), d('2', 2), d('3', 3), d('4', 4), d('5', 5), EMPTY_DIGEST].map(formatDigest));
  assert.deepEqual(actionResultBlobs(decodeActionResult(encodeActionResult(ar))), actionResultBlobs(ar));
});

// ---------------------------------------------------------------- hostile ActionResults

const HASH = Buffer.from('a'.repeat(64));
const len = (n: number): Buffer => {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
};
const field = (tag: number, body: Buffer): Buffer => Buffer.concat([Buffer.from([tag]), len(body.length), body]);
const digestMsg = (hash = HASH, size: Buffer = Buffer.from([0x10, 0x05])): Buffer => Buffer.concat([field(0x0a, hash), size]);
const outputDir = (path = 'tree', digest = digestMsg()): Buffer => field(0x1a, Buffer.concat([field(0x0a, Buffer.from(path)), field(0x1a, digest)]));
const outputFile = (path: string | Buffer = 'f', digest = digestMsg()): Buffer =>
  field(0x12, Buffer.concat([field(0x0a, Buffer.from(path)), field(0x12, digest)]));

const hostileResults: [string, Buffer][] = [
  ['a digest hash in upper case', outputFile('f', digestMsg(Buffer.from('A'.repeat(64))))],
  ['a digest hash of 63 characters', outputFile('f', digestMsg(Buffer.from('a'.repeat(63))))],
  ['a negative size', outputFile('f', digestMsg(HASH, Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])))],
  ['an output file without a digest', field(0x12, field(0x0a, Buffer.from('f')))],
  ['an output directory without a tree digest', field(0x1a, field(0x0a, Buffer.from('d')))],
  ['an absolute output path', outputFile('/etc/passwd')],
  ['an empty output file path', outputFile('')],
  ['a path with invalid UTF-8', outputFile(Buffer.from([0x61, 0xff, 0xfe]))],
  ['a truncated message', outputDir().subarray(0, 40)],
  ['a length running past the end', Buffer.concat([Buffer.from([0x1a, 0xff, 0x01]), outputDir()])],
  ['a group wire type', Buffer.from([0x1b, 0x00])],
  ['field number 0', Buffer.from([0x02, 0x00])],
  ['a boolean holding 2', field(0x1a, Buffer.concat([field(0x1a, digestMsg()), Buffer.from([0x20, 0x02])]))],
  ['two stdout digests', Buffer.concat([field(0x32, digestMsg()), field(0x32, digestMsg())])],
  ['a huge repeated field', Buffer.concat(Array.from({ length: MAX_ACTION_OUTPUTS + 1 }, () => outputDir('d')))],
  ['a message over the size limit', Buffer.concat([field(0x2a, Buffer.alloc(MAX_ACTION_RESULT_BYTES))])],
];

for (const [name, bytes] of hostileResults) {
  test(`hostile ActionResult refused: ${name}`, () => {
    assert.throws(() => decodeActionResult(bytes, 'ac-key'), (e: unknown) => e instanceof InvalidActionResultError && /ac-key/.test(e.message));
  });
}

test('every truncation of a valid ActionResult inside a field is refused', () => {
  const whole = encodeActionResult(randomResult(rng(3)));
  const bytes = Buffer.concat([whole, outputDir(), outputFile()]);
  // Top-level field boundaries: a cut there is a shorter valid message, anything else is refused.
  // Every tag here is one byte; a varint field (exit_code) is skipped, a length-delimited one read.
  const boundaries = new Set<number>();
  const varintEnd = (p: number): [number, number] => {
    let value = 0;
    let mul = 1;
    for (;;) {
      const b = bytes[p++]!;
      value += (b & 0x7f) * mul;
      mul *= 128;
      if (b < 0x80) return [value, p];
    }
  };
  for (let pos = 0; pos < bytes.length; ) {
    boundaries.add(pos);
    const [value, after] = varintEnd(pos + 1);
    pos = (bytes[pos]! & 7) === 0 ? after : after + value;
  }
  for (let cut = 1; cut < bytes.length; cut++) {
    if (boundaries.has(cut)) continue;
    assert.throws(() => decodeActionResult(bytes.subarray(0, cut)), InvalidActionResultError, `cut at ${cut}`);
  }
});

// ---------------------------------------------------------------- hostile Trees

const treeOf = (root: Buffer, children: Buffer[]): Buffer => encodeTree(root, children);
const fileNode = (name: string): Buffer => field(0x0a, Buffer.concat([field(0x0a, Buffer.from(name)), field(0x12, digestMsg())]));

test('hostile Tree refused: a child Directory with a .. name', () => {
  const sub = fileNode('..');
  const root = encodeDirectory({ files: [], directories: [{ name: 'sub', digest: directoryBlob({ files: [], directories: [], symlinks: [] }).digest }], symlinks: [] });
  assert.throws(() => decodeTree(treeOf(root, [sub])), InvalidTreeError);
});

test('hostile Tree refused: more children than the limit', () => {
  const empty = Buffer.alloc(0);
  const bytes = treeOf(empty, Array.from({ length: MAX_TREE_CHILDREN + 1 }, () => empty));
  assert.throws(() => decodeTree(bytes), /more than 1000000 child directories/);
});

test('hostile Tree refused: truncated, unknown field, no root, two roots', () => {
  const root = encodeDirectory({ files: [{ name: 'a', digest: { hash: 'a'.repeat(64), size: 5 }, executable: false }], directories: [], symlinks: [] });
  const good = treeOf(root, []);
  assert.throws(() => decodeTree(good.subarray(0, good.length - 1)), InvalidTreeError);
  assert.throws(() => decodeTree(Buffer.concat([good, Buffer.from([0x18, 0x01])])), /unsupported field/);
  assert.throws(() => decodeTree(field(0x12, root)), /no root/);
  assert.throws(() => decodeTree(Buffer.concat([good, good])), /two root/);
});

test('a Tree whose root references a directory it lacks (or with another size) is refused', () => {
  const child = directoryBlob({ files: [{ name: 'x', digest: { hash: 'b'.repeat(64), size: 1 }, executable: false }], directories: [], symlinks: [] });
  const rootWith = (digest: Digest) => encodeDirectory({ files: [], directories: [{ name: 'sub', digest }], symlinks: [] });
  const ok = decodeTree(treeOf(rootWith(child.digest), [child.bytes]));
  assert.equal(treeDirectories(ok).size, 2);
  assert.throws(() => treeDirectories(decodeTree(treeOf(rootWith(child.digest), []))), /'sub'.*is not in it/);
  const wrongSize = { hash: child.digest.hash, size: child.digest.size + 1 };
  assert.throws(() => treeDirectories(decodeTree(treeOf(rootWith(wrongSize), [child.bytes]))), InvalidTreeError);
});
