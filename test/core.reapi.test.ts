import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { compareRawNames, decodeDirectory, directoryBlob, encodeDirectory, sameRawEntry, splitDirectory, subdirectoryDigests } from '../src/core/reapi.js';
import { digestOf, formatDigest } from '../src/core/digest.js';
import { compareNames } from '../src/core/names.js';
import { InvalidTreeError } from '../src/errors.js';
import { snapshot } from '../src/capture/snapshot.js';
import { LocalStore } from '../src/store/local.js';
import { tempDir } from './helpers/tmp.js';

interface Fixture {
  name: string;
  entries: { path: string; type: 'file' | 'dir' | 'symlink'; text?: string; base64?: string; executable?: boolean; target?: string }[];
  root_digest: string;
  directories: Record<string, string>;
}
const fixtures = (JSON.parse(fs.readFileSync(new URL('../../test/fixtures/reapi-trees.json', import.meta.url), 'utf8')) as { fixtures: Fixture[] }).fixtures;

for (const fx of fixtures) {
  test(`golden vector '${fx.name}': every Directory message decodes and re-encodes byte for byte`, () => {
    for (const [hash, hex] of Object.entries(fx.directories)) {
      const bytes = Buffer.from(hex, 'hex');
      assert.equal(digestOf(bytes).hash, hash);
      const dir = decodeDirectory(bytes, hash);
      assert.equal(encodeDirectory(dir).toString('hex'), hex);
      // The server's quick read of the subdirectories agrees with the full decode.
      assert.deepEqual(subdirectoryDigests(bytes, hash), dir.directories.map((d) => d.digest));
    }
  });

  test(`golden vector '${fx.name}': a snapshot of the tree on disk gives the same root digest and messages`, async () => {
    const base = tempDir('tc-golden');
    const src = join(base, 'src');
    fs.mkdirSync(src);
    for (const e of fx.entries) {
      const p = join(src, e.path);
      fs.mkdirSync(join(p, '..'), { recursive: true });
      if (e.type === 'dir') fs.mkdirSync(p, { recursive: true });
      else if (e.type === 'symlink') fs.symlinkSync(e.target!, p);
      else {
        fs.writeFileSync(p, e.base64 !== undefined ? Buffer.from(e.base64, 'base64') : e.text ?? '');
        fs.chmodSync(p, e.executable ? 0o755 : 0o644);
      }
    }
    const store = LocalStore.open(join(base, 'store'));
    const r = await snapshot(src, { store, jobs: 1 });
    assert.equal(formatDigest(r.digest), fx.root_digest);
    for (const [hash, hex] of Object.entries(fx.directories)) {
      assert.equal(store.readSync({ hash, size: hex.length / 2 }).toString('hex'), hex);
    }
  });
}

test('names sort by UTF-8 bytes, not UTF-16 code units', () => {
  // U+FF5E (3 UTF-8 bytes, EF BD 9E) sorts before U+1F600 (4 bytes, F0 ...), though UTF-16 says otherwise.
  const a = '\uff5e';
  const b = '\u{1f600}';
  assert.ok(a > b, 'UTF-16 order puts the surrogate pair first');
  assert.ok(compareNames(a, b) < 0);
  assert.equal(Math.sign(compareNames(a, b)), Math.sign(Buffer.compare(Buffer.from(a), Buffer.from(b))));
});

/** A FileNode field built by hand; `sizeField` and `extra` let a test write non-canonical bytes. */
function fileEntry(name: string, sizeField = Buffer.from([0x10, 0x01]), extra = Buffer.alloc(0)): Buffer {
  const hash = Buffer.from('a'.repeat(64));
  const digest = Buffer.concat([Buffer.from([0x0a, 64]), hash, sizeField]);
  const nameBytes = Buffer.from(name, 'latin1');
  const body = Buffer.concat([Buffer.from([0x0a, nameBytes.length]), nameBytes, Buffer.from([0x12, digest.length]), digest, extra]);
  return Buffer.concat([Buffer.from([0x0a, body.length]), body]);
}

const hostile: [string, Buffer][] = [
  ['.. as a name', fileEntry('..')],
  ['. as a name', fileEntry('.')],
  ['an empty name', fileEntry('')],
  ['a name with /', fileEntry('a/b')],
  ['a name with NUL', fileEntry('a\0b')],
  ['duplicate names', Buffer.concat([fileEntry('x'), fileEntry('x')])],
  ['unsorted entries', Buffer.concat([fileEntry('b'), fileEntry('a')])],
  ['invalid UTF-8 in a name', fileEntry('\xff\xfe')],
  ['an unknown field', Buffer.concat([fileEntry('a'), Buffer.from([0x28, 0x01])])],
  ['node_properties (field 5)', Buffer.concat([fileEntry('a'), Buffer.from([0x2a, 0x00])])],
  ['a truncated message', fileEntry('abc').subarray(0, 20)],
  ['the same name as a file and a directory', Buffer.concat([fileEntry('x'), Buffer.from([0x12]), fileEntry('x').subarray(1)])],
  ['a directory entry before a file entry', Buffer.concat([Buffer.from([0x12]), fileEntry('b').subarray(1), fileEntry('a')])],
  ['a zero size written out', fileEntry('a', Buffer.from([0x10, 0x00]))],
  ['is_executable=false written out', fileEntry('a', undefined, Buffer.from([0x20, 0x00]))],
  ['a size as a non-minimal varint', fileEntry('a', Buffer.from([0x10, 0x81, 0x00]))],
];

for (const [what, bytes] of hostile) {
  test(`a Directory message with ${what} is refused with the digest named`, () => {
    const where = formatDigest(digestOf(bytes));
    assert.throws(
      () => decodeDirectory(bytes, where),
      (e: unknown) => e instanceof InvalidTreeError && e.code === 'ERR_TREECAST_INVALID_TREE' && e.message.includes(where),
    );
  });
}

test('subdirectoryDigests reads only the subdirectories of a message, in order, and refuses bytes that do not parse', () => {
  const d = (text: string) => digestOf(Buffer.from(text));
  const dir = {
    files: [{ name: 'a.txt', digest: d('a'), executable: true }, { name: 'z.txt', digest: d('z'), executable: false }],
    directories: [{ name: 'lib', digest: d('lib') }, { name: 'src', digest: d('src') }],
    symlinks: [{ name: 'link', target: 'a.txt' }],
  };
  const { bytes } = directoryBlob(dir);
  assert.deepEqual(subdirectoryDigests(bytes), [d('lib'), d('src')]);
  assert.deepEqual(subdirectoryDigests(directoryBlob({ files: dir.files, directories: [], symlinks: [] }).bytes), []);
  // Cut anywhere, the message no longer parses: refused, never half read.
  for (let cut = 1; cut < bytes.length; cut++) {
    const part = bytes.subarray(0, cut);
    let parsed: unknown;
    try {
      parsed = subdirectoryDigests(part);
    } catch (e) {
      assert.ok(e instanceof InvalidTreeError, `cut at ${cut}: ${String(e)}`);
      continue;
    }
    // A cut between two entries is itself a message: it may only name the entries it holds whole.
    assert.deepEqual(parsed, decodeDirectory(part).directories.map((x) => x.digest), `cut at ${cut}`);
  }
  assert.throws(() => subdirectoryDigests(Buffer.from([0x22, 0x00])), InvalidTreeError, 'an unknown field');
});

test('raw entries compare as bytes: names in UTF-8 byte order (a prefix first), entries the same only when every byte is', () => {
  const digest = { hash: 'ab'.repeat(32), size: 3 };
  const file = (name: string) => ({ name, digest, executable: false });
  const x = splitDirectory(encodeDirectory({ files: ['a', 'ab', 'z', 'é'].map(file), directories: [{ name: 'd', digest }], symlinks: [{ name: 'l', target: 'x1' }] }));
  const y = splitDirectory(encodeDirectory({ files: [], directories: [], symlinks: [{ name: 'l', target: 'x2' }] }));
  assert.ok(compareRawNames(x, 0, x, 1) < 0, "'a' before 'ab'");
  assert.ok(compareRawNames(x, 1, x, 0) > 0, "'ab' after 'a'");
  assert.ok(compareRawNames(x, 2, x, 3) < 0, "'z' (0x7a) before 'é' (0xc3)");
  assert.equal(compareRawNames(x, 5, y, 0), 0);
  assert.equal(sameRawEntry(x, 5, x, 5), true);
  assert.equal(sameRawEntry(x, 5, y, 0), false, 'targets that differ in their last byte only');
  assert.equal(sameRawEntry(x, 0, x, 1), false);
  // A group out of order, or a duplicate within it, is refused on bytes.
  for (const names of [['ab', 'a'], ['é', 'z'], ['a', 'a']]) {
    assert.throws(() => splitDirectory(encodeDirectory({ files: names.map(file), directories: [], symlinks: [] })), InvalidTreeError, names.join(','));
  }
});
