import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { type Directory, decodeDirectory, encodeDirectory } from '../src/core/reapi.js';
import { P_DIR, P_EXEC, P_LINK, PackedTree } from '../src/core/packed-tree.js';
import { digestOf, formatDigest } from '../src/core/digest.js';
import { InvalidTreeError } from '../src/errors.js';
import { rng } from './helpers/random-tree.js';

/** The PackedTree's entries of directory `d` read back as a Directory. */
function unpack(t: PackedTree, d: number): Directory {
  const files = [];
  const directories = [];
  const symlinks = [];
  for (let e = t.first[d]!; e < t.first[d + 1]!; e++) {
    const name = t.name(d, e);
    const k = t.kinds[e]!;
    if (k === P_LINK) symlinks.push({ name, target: t.target(d, e) });
    else if (k === P_DIR) directories.push({ name, digest: { hash: t.hash(d, e), size: t.values[e]! } });
    else files.push({ name, digest: { hash: t.hash(d, e), size: t.values[e]! }, executable: k === P_EXEC });
    assert.equal(e < t.fileEnd[d]!, k !== P_DIR && k !== P_LINK, 'files first');
    assert.equal(e >= t.dirEnd[d]!, k === P_LINK, 'symlinks last');
  }
  return { files, directories, symlinks };
}

/** Both decoders on `bytes`: the same verdict, the same error, the same entries. */
function agree(bytes: Buffer, what: string): 'accepted' | 'refused' {
  const where = formatDigest(digestOf(bytes));
  let expected: Directory | Error;
  try {
    expected = decodeDirectory(bytes, where);
  } catch (e) {
    expected = e as Error;
  }
  const t = new PackedTree();
  t.add(fileEntry('earlier'), 'earlier'); // a message before, which a refusal must not disturb
  let got: Directory | Error;
  try {
    got = unpack(t, t.add(bytes, where));
  } catch (e) {
    got = e as Error;
  }
  if (expected instanceof Error) {
    assert.ok(got instanceof InvalidTreeError, `${what}: refused by decodeDirectory (${expected.message}), accepted packed`);
    assert.equal(got.message, expected.message, what);
    assert.equal(t.entries, 1, `${what}: a refused message leaves no entries`);
    assert.equal(t.directories, 1);
    return 'refused';
  }
  assert.ok(!(got instanceof Error), `${what}: accepted by decodeDirectory, refused packed (${String(got)})`);
  assert.deepEqual(got, expected, what);
  assert.equal(t.directories, 2);
  assert.deepEqual(unpack(t, 0).files.map((f) => f.name), ['earlier']);
  return 'accepted';
}

const hash = (s: string) => digestOf(Buffer.from(s));

test('golden vectors: every Directory message packs to the entries decodeDirectory gives', () => {
  const fixtures = (JSON.parse(fs.readFileSync(new URL('../../test/fixtures/reapi-trees.json', import.meta.url), 'utf8')) as { fixtures: { directories: Record<string, string> }[] })
    .fixtures;
  let n = 0;
  for (const fx of fixtures) for (const hex of Object.values(fx.directories)) assert.equal(agree(Buffer.from(hex, 'hex'), `vector ${n++}`), 'accepted');
  assert.ok(n > 5);
});

const varint = (n: number) => (n < 128 ? Buffer.from([n]) : Buffer.from([(n & 0x7f) | 0x80, n >> 7]));

/** A FileNode field built by hand, so a test can write any bytes. */
function fileEntry(name: Buffer | string, opts: { hash?: Buffer; sizeField?: Buffer; extra?: Buffer; tag?: number } = {}): Buffer {
  const nameBytes = typeof name === 'string' ? Buffer.from(name, 'latin1') : name;
  const hashBytes = opts.hash ?? Buffer.from('a'.repeat(64));
  const digest = Buffer.concat([Buffer.from([0x0a, hashBytes.length]), hashBytes, opts.sizeField ?? Buffer.from([0x10, 0x01])]);
  const body = Buffer.concat([Buffer.from([0x0a]), varint(nameBytes.length), nameBytes, Buffer.from([0x12, digest.length]), digest, opts.extra ?? Buffer.alloc(0)]);
  return Buffer.concat([Buffer.from([opts.tag ?? 0x0a]), varint(body.length), body]);
}

function linkEntry(name: string, target: Buffer): Buffer {
  const n = Buffer.from(name);
  const body = Buffer.concat([Buffer.from([0x0a, n.length]), n, Buffer.from([0x12]), varint(target.length), target]);
  return Buffer.concat([Buffer.from([0x1a]), varint(body.length), body]);
}

test('hostile messages are refused with decodeDirectory’s own error; unusual valid ones are accepted', () => {
  const refused: [string, Buffer][] = [
    ['.. as a name', fileEntry('..')],
    ['. as a name', fileEntry('.')],
    ['an empty name', fileEntry('')],
    ['a name with /', fileEntry('a/b')],
    ['a name with NUL', fileEntry('a\0b')],
    ['a name of 256 bytes', fileEntry('n'.repeat(256))],
    ['duplicate names', Buffer.concat([fileEntry('x'), fileEntry('x')])],
    ['unsorted entries', Buffer.concat([fileEntry('b'), fileEntry('a')])],
    ['unsorted by UTF-8 bytes', Buffer.concat([fileEntry(Buffer.from('é')), fileEntry('z')])],
    ['invalid UTF-8 in a name', fileEntry('\xff\xfe')],
    ['a UTF-16 surrogate in a name', fileEntry(Buffer.from([0xed, 0xa0, 0x80]))],
    ['an unknown field', Buffer.concat([fileEntry('a'), Buffer.from([0x28, 0x01])])],
    ['node_properties (field 5)', Buffer.concat([fileEntry('a'), Buffer.from([0x2a, 0x00])])],
    ['a truncated message', fileEntry('abc').subarray(0, 20)],
    ['the same name as a file and a directory', Buffer.concat([fileEntry('x'), fileEntry('x', { tag: 0x12, sizeField: Buffer.alloc(0) })])],
    ['the same name as a directory and a symlink', Buffer.concat([fileEntry('x', { tag: 0x12, sizeField: Buffer.alloc(0) }), linkEntry('x', Buffer.from('t'))])],
    ['a directory entry before a file entry', Buffer.concat([fileEntry('b', { tag: 0x12, sizeField: Buffer.alloc(0) }), fileEntry('a')])],
    ['a zero size written out', fileEntry('a', { sizeField: Buffer.from([0x10, 0x00]) })],
    ['is_executable=false written out', fileEntry('a', { extra: Buffer.from([0x20, 0x00]) })],
    ['a size as a non-minimal varint', fileEntry('a', { sizeField: Buffer.from([0x10, 0x81, 0x00]) })],
    ['a size past 2^53', fileEntry('a', { sizeField: Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]) })],
    ['an upper-case hash', fileEntry('a', { hash: Buffer.from('A'.repeat(64)) })],
    ['a hash of 63 characters', fileEntry('a', { hash: Buffer.from('a'.repeat(63)) })],
    ['a hash of 65 characters', fileEntry('a', { hash: Buffer.from('a'.repeat(65)) })],
    ['an empty symlink target', linkEntry('l', Buffer.alloc(0))],
    ['a NUL in a symlink target', linkEntry('l', Buffer.from('a\0b'))],
    ['a symlink target of 4096 bytes', linkEntry('l', Buffer.alloc(4096, 0x61))],
    ['invalid UTF-8 in a symlink target', linkEntry('l', Buffer.from([0x61, 0xff]))],
    // The usual shape read with plain offsets (digestEntry) must refuse what the general reading does.
    ['is_executable written twice', fileEntry('a', { extra: Buffer.from([0x20, 0x01, 0x20, 0x01]) })],
    ['is_executable with a byte after it', fileEntry('a', { extra: Buffer.from([0x20, 0x01, 0x00]) })],
    ['is_executable on a directory', fileEntry('x', { tag: 0x12, sizeField: Buffer.alloc(0), extra: Buffer.from([0x20, 0x01]) })],
    ['a size field on a directory past its digest', fileEntry('x', { tag: 0x12, sizeField: Buffer.alloc(0), extra: Buffer.from([0x10, 0x01]) })],
    ['a size as a non-minimal five-byte varint', fileEntry('a', { sizeField: Buffer.from([0x10, 0x81, 0x80, 0x80, 0x80, 0x00]) })],
  ];
  for (const [what, bytes] of refused) assert.equal(agree(bytes, what), 'refused', what);
  const accepted: [string, Buffer][] = [
    ['an empty message', Buffer.alloc(0)],
    ['a name of 255 bytes (a two-byte length)', fileEntry('n'.repeat(255))],
    ['a name of 127 bytes (the longest one-byte length)', fileEntry('n'.repeat(127))],
    ['a name of 128 bytes', fileEntry('n'.repeat(128))],
    ['a size of 2^34 (a five-byte varint)', fileEntry('a', { sizeField: Buffer.from([0x10, 0x80, 0x80, 0x80, 0x80, 0x40]) })],
    ['a size of 2^42 (a seven-byte varint)', fileEntry('a', { sizeField: Buffer.from([0x10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]) })],
    ['an executable directory-sized file and a directory', Buffer.concat([fileEntry('a', { extra: Buffer.from([0x20, 0x01]) }), fileEntry('b', { tag: 0x12, sizeField: Buffer.alloc(0) })])],
    ['UTF-8 names in byte order', Buffer.concat([fileEntry('z'), fileEntry(Buffer.from('\uff5e')), fileEntry(Buffer.from('\u{1f600}'))])],
    ['an executable', fileEntry('a', { extra: Buffer.from([0x20, 0x01]) })],
    ['a zero size left out', fileEntry('a', { sizeField: Buffer.alloc(0) })],
    ['a symlink target of 4095 bytes', linkEntry('l', Buffer.alloc(4095, 0x61))],
    ['a UTF-8 symlink target', linkEntry('l', Buffer.from('../é'))],
  ];
  for (const [what, bytes] of accepted) assert.equal(agree(bytes, what), 'accepted', what);
});

test('random messages, and every one-byte change to them: the packed decoder agrees with decodeDirectory', () => {
  const rand = rng(10);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const names = ['a', 'b', 'lib', 'node_modules', 'é', '\u{1f600}', 'x'.repeat(130), 'README.md', 'z-z', '.git'];
  const verdicts = { accepted: 0, refused: 0 };
  for (let m = 0; m < 40; m++) {
    const used = new Set<string>();
    const take = () => {
      const n = pick(names);
      if (used.has(n)) return undefined;
      used.add(n);
      return n;
    };
    const dir: { files: Directory['files'][number][]; directories: Directory['directories'][number][]; symlinks: Directory['symlinks'][number][] } = { files: [], directories: [], symlinks: [] };
    for (let k = 0; k < 6; k++) {
      const name = take();
      if (name === undefined) continue;
      const r = rand();
      if (r < 0.5) dir.files.push({ name, digest: { hash: hash(name).hash, size: Math.floor(rand() * 300) }, executable: rand() < 0.3 });
      else if (r < 0.8) dir.directories.push({ name, digest: hash(name + '/') });
      else dir.symlinks.push({ name, target: pick(['a', '../b', 'é/x', 't'.repeat(200)]) });
    }
    const byName = (a: { name: string }, b: { name: string }) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name));
    dir.files.sort(byName);
    dir.directories.sort(byName);
    dir.symlinks.sort(byName);
    const bytes = encodeDirectory(dir);
    assert.equal(agree(bytes, `message ${m}`), 'accepted');
    for (let i = 0; i < bytes.length; i++) {
      for (const v of [0x00, 0x2f, 0x2e, 0x41, 0x80, 0xff, bytes[i]! ^ 1, bytes[i]! + 1]) {
        const b = Buffer.from(bytes);
        b[i] = v & 0xff;
        verdicts[agree(b, `message ${m}, byte ${i} set to ${v & 0xff}`)]++;
      }
    }
  }
  // Both kinds of outcome were exercised.
  assert.ok(verdicts.accepted > 100 && verdicts.refused > 1000, JSON.stringify(verdicts));
});
