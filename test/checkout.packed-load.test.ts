/**
 * A fresh checkout loads its tree from the tree's pack as one buffer and an index
 * (TreeReader.usePack): the same PackedTree as from the messages' blobs, the same refusals.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { TreeBuilder, type TreeEntry } from '../src/core/tree-builder.js';
import { type Digest, digestOf, formatDigest } from '../src/core/digest.js';
import { type Directory, directoryBlob } from '../src/core/reapi.js';
import { MAX_DEPTH } from '../src/core/names.js';
import type { PackedTree } from '../src/core/packed-tree.js';
import { planFreshPacked } from '../src/materialize/plan.js';
import { checkout } from '../src/materialize/checkout.js';
import { LocalStore } from '../src/store/local.js';
import { TreeReader } from '../src/store/tree-reader.js';
import { readTreePackRaw, writeTreePack } from '../src/store/tree-pack.js';
import { InvalidTreeError } from '../src/errors.js';
import { tempDir } from './helpers/tmp.js';

const f = (path: string, text: string, executable = false): TreeEntry => ({ type: 'file', path, digest: digestOf(Buffer.from(text)), executable });

/** Many directories (so the pack's index probes past collisions), shared subtrees at several depths, links, executables, UTF-8 names. */
function sampleTree(): { root: Digest; messages: Map<string, { bytes: Buffer }> } {
  const b = new TreeBuilder();
  const shared = (at: string): TreeEntry[] => [f(`${at}/index.js`, 'same'), f(`${at}/bin/run`, 'run', true), { type: 'symlink', path: `${at}/link`, target: '../x' }];
  const entries: TreeEntry[] = [f('empty', ''), f('é', 'e'), { type: 'dir', path: 'hollow' }, ...shared('a'), ...shared('c/d/e'), ...shared('c/d/e/a')];
  for (let i = 0; i < 400; i++) entries.push(f(`many/d${i}/sub${i % 7}/file`, `content ${i}`, i % 5 === 0));
  for (const e of entries) b.add(e);
  const built = b.build();
  return { root: built.root, messages: built.messages };
}

function storeWith(messages: Iterable<{ bytes: Buffer }>): LocalStore {
  const store = LocalStore.open(join(tempDir('tc-packed-load'), 'store'));
  for (const m of messages) store.putSync(m.bytes);
  return store;
}

/** Everything a PackedTree holds, for comparing two loads. */
function contents(t: PackedTree): unknown {
  const n = t.entries;
  return {
    directories: t.directories,
    entries: n,
    first: t.first,
    fileEnd: t.fileEnd,
    dirEnd: t.dirEnd,
    bytes: t.bytes.map((b) => b.toString('hex')),
    kinds: [...t.kinds.subarray(0, n)],
    nameStarts: [...t.nameStarts.subarray(0, n)],
    nameEnds: [...t.nameEnds.subarray(0, n)],
    valueStarts: [...t.valueStarts.subarray(0, n)],
    values: [...t.values.subarray(0, n)],
    children: [...t.children.subarray(0, n)],
  };
}

function loadFromBlobs(store: LocalStore, root: Digest): PackedTree {
  return new TreeReader(store).loadPackedSync(root);
}

function loadFromPack(store: LocalStore, root: Digest): PackedTree {
  const reader = new TreeReader(store);
  assert.ok(reader.usePack(root), 'the pack is read');
  return reader.loadPackedSync(root);
}

/** The error a load throws (its class and message), or 'loaded'. */
function outcome(load: () => unknown): string {
  try {
    load();
    return 'loaded';
  } catch (e) {
    return `${(e as Error).constructor.name}: ${(e as Error).message}`;
  }
}

test('a tree loaded from its pack is the tree loaded from its blobs, entry for entry, and plans the same checkout', () => {
  const t = sampleTree();
  assert.ok(t.messages.size > 800);
  const store = storeWith(t.messages.values());
  const fromBlobs = loadFromBlobs(store, t.root);
  writeTreePack(store, t.root, [...t.messages].map(([h, m]) => [h, m.bytes] as [string, Buffer]));
  const fromPack = loadFromPack(store, t.root);
  assert.deepEqual(contents(fromPack), contents(fromBlobs));
  const a = planFreshPacked(fromPack);
  const b = planFreshPacked(fromBlobs);
  assert.deepEqual([...a.steps], [...b.steps]);
  assert.deepEqual({ mkdirs: a.mkdirs, writes: a.writes, sample: a.sample }, { mkdirs: b.mkdirs, writes: b.writes, sample: b.sample });
});

test('a message the pack lacks or holds with the wrong length is read from the store; one held twice is read as the last copy', () => {
  const t = sampleTree();
  const store = storeWith(t.messages.values());
  const expected = contents(loadFromBlobs(store, t.root));
  const all = [...t.messages].map(([h, m]) => [h, m.bytes] as [string, Buffer]);
  const subs = all.filter(([h]) => h !== t.root.hash);
  // The one left out is named by two entries at different depths (`a` and `c/d/e/a`).
  const named = (h: string) => all.filter(([, bytes]) => bytes.includes(h)).length;
  const lacked = subs.find(([h]) => named(h) >= 2)!;
  const [shortened, twice] = subs.filter(([h]) => h !== lacked[0]).slice(10, 12) as [[string, Buffer], [string, Buffer]];
  const pack: [string, Buffer][] = [];
  for (const [h, bytes] of all) {
    if (h === lacked[0]) continue;
    if (h === shortened[0]) pack.push([h, bytes.subarray(0, bytes.length - 1)]);
    else if (h === twice[0]) pack.push([h, Buffer.alloc(bytes.length, 0xff)], [h, bytes]);
    else pack.push([h, bytes]);
  }
  writeTreePack(store, t.root, pack);
  const raw = readTreePackRaw(store, t.root)!;
  assert.equal(raw.starts.length, all.length, 'one message left out, one added');
  assert.deepEqual(contents(loadFromPack(store, t.root)), expected);

  // Missing from both: the same error as a load from blobs alone.
  fs.rmSync(store.blobPath(lacked[0]));
  const fromBlobs = outcome(() => loadFromBlobs(store, t.root));
  assert.match(fromBlobs, /^BlobNotFoundError: /);
  assert.equal(outcome(() => loadFromPack(store, t.root)), fromBlobs);
});

/** A chain of directories `d/d/d/...` `depth` deep whose deepest directory is `leaf`. */
function chain(leaf: Directory, depth: number): { root: Digest; messages: Buffer[] } {
  let cur = directoryBlob(leaf);
  const messages = [cur.bytes];
  for (let i = 0; i < depth; i++) {
    cur = directoryBlob({ files: [], directories: [{ name: 'd', digest: cur.digest }], symlinks: [] });
    messages.push(cur.bytes);
  }
  return { root: cur.digest, messages };
}

test('a hostile message deep in a pack: the checkout fails with the error a load from blobs gives, naming that message, and writes nothing', async () => {
  const fine = directoryBlob({ files: [{ name: 'fine', digest: digestOf(Buffer.from('x')), executable: false }], directories: [], symlinks: [] });
  const evil = Buffer.from(fine.bytes.toString('latin1').replace('fine', '../x'), 'latin1');
  // The evil message beside a valid sibling, six levels down.
  const leaf = chain({ files: [], directories: [], symlinks: [] }, 0);
  const mid = directoryBlob({
    files: [{ name: 'a', digest: digestOf(Buffer.from('x')), executable: false }],
    directories: [
      { name: 'bad', digest: digestOf(evil) },
      { name: 'ok', digest: digestOf(leaf.messages[0]!) },
    ],
    symlinks: [],
  });
  const t = chain({ files: [], directories: [{ name: 'mid', digest: mid.digest }], symlinks: [] }, 5);
  const messages = [evil, leaf.messages[0]!, mid.bytes, ...t.messages];
  const store = storeWith(messages.map((bytes) => ({ bytes })));
  store.putSync(Buffer.from('x'));
  const fromBlobs = outcome(() => loadFromBlobs(store, t.root));
  assert.match(fromBlobs, /^InvalidTreeError: /);
  assert.ok(fromBlobs.includes(formatDigest(digestOf(evil))), fromBlobs);
  // The root first in the pack, the evil message last.
  writeTreePack(store, t.root, [...messages].reverse().map((m) => [digestOf(m).hash, m] as [string, Buffer]));
  assert.equal(outcome(() => loadFromPack(store, t.root)), fromBlobs);

  const dir = tempDir('tc-packed-load-co');
  // A target the checkout makes goes again; an empty one that was there stays empty.
  const made = join(dir, 'new', 'out');
  await assert.rejects(checkout(t.root, made, { store, method: 'hardlink' }), (e: unknown) => e instanceof InvalidTreeError && `InvalidTreeError: ${e.message}` === fromBlobs);
  assert.equal(fs.existsSync(join(dir, 'new')), false);
  const empty = join(dir, 'empty');
  fs.mkdirSync(empty);
  await assert.rejects(checkout(t.root, empty, { store, method: 'hardlink' }), InvalidTreeError);
  assert.deepEqual(fs.readdirSync(empty), []);
  // No record of a checkout was left for either target.
  const records = join(store.root, 'checkouts');
  assert.deepEqual(fs.existsSync(records) ? fs.readdirSync(records) : [], []);
});

test('a tree nesting deeper than the limit is refused from its pack as from its blobs', () => {
  const t = chain({ files: [], directories: [], symlinks: [] }, MAX_DEPTH + 1);
  const store = storeWith(t.messages.map((bytes) => ({ bytes })));
  const fromBlobs = outcome(() => loadFromBlobs(store, t.root));
  assert.match(fromBlobs, /^InvalidTreeError: .*nests deeper than/);
  writeTreePack(store, t.root, t.messages.map((m) => [digestOf(m).hash, m] as [string, Buffer]));
  assert.equal(outcome(() => loadFromPack(store, t.root)), fromBlobs);
  // One level less loads.
  const ok = chain({ files: [], directories: [], symlinks: [] }, MAX_DEPTH);
  const store2 = storeWith(ok.messages.map((bytes) => ({ bytes })));
  writeTreePack(store2, ok.root, ok.messages.map((m) => [digestOf(m).hash, m] as [string, Buffer]));
  assert.equal(loadFromPack(store2, ok.root).directories, MAX_DEPTH + 1);
});
