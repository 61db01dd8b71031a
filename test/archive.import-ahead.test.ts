/**
 * import's head start (import-ahead.ts): the workers stage the first plain files of a zip while it
 * is judged. Staged files enter the store only once the whole archive is accepted: a refused
 * archive, a corrupt staged entry and a staged entry the judge bounds differently each leave no
 * temporary file and no blob that should not be there, and an accepted import stores what an
 * import without the head start stores. Archives over 8 MiB, as workers start early only for those.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { importArchive } from '../src/archive/import.js';
import { readCentralDirectory } from '../src/archive/central-directory.js';
import { StagedAhead, aheadEntries, type StagingPool } from '../src/archive/import-ahead.js';
import { judgeEntries } from '../src/archive/entry-rules.js';
import { stageArchiveBatch, type IngestBatch, type StagedResult } from '../src/archive/ingest-op.js';
import { DEFAULT_BATCH_LIMITS } from '../src/archive/extract-plan.js';
import { LocalStore } from '../src/store/local.js';
import { ArchiveError, UnsafePathError } from '../src/errors.js';
import { craftZip, scratchDir, type CraftEntry } from './helpers/zip-craft.js';

/** `perDir` small files in each of a dozen directories, then a 9 MiB file, so the archive is over 8 MiB. */
function plainEntries(perDir = 100): CraftEntry[] {
  const entries: CraftEntry[] = [];
  for (let d = 0; d < 12; d++) {
    entries.push({ name: `d${d}/` });
    for (let i = 0; i < perDir; i++) entries.push({ name: `d${d}/f${i}`, data: `file ${d}/${i}\n`.repeat(1 + (i % 7)), mode: i % 10 === 0 ? 0o100755 : 0o100644 });
  }
  entries.push({ name: 'empty', data: '' });
  entries.push({ name: 'big', data: randomBytes(9 << 20), method: 0 });
  return entries;
}

/** Every file under the store's root (blobs, temporary files, refs). */
function storeFiles(root: string): string[] {
  return fs.existsSync(root) ? (fs.readdirSync(root, { recursive: true, withFileTypes: true }) as fs.Dirent[]).filter((d) => d.isFile()).map((d) => join(d.parentPath, d.name)).sort() : [];
}

/** Moves central directory record `from` to position `to` (the local data stays where it is). */
function moveCentralRecord(zip: Buffer, from: number, to: number): Buffer {
  const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const cdOffset = zip.readUInt32LE(eocd + 16);
  const records: Buffer[] = [];
  for (let p = cdOffset; p < eocd; ) {
    const len = 46 + zip.readUInt16LE(p + 28) + zip.readUInt16LE(p + 30) + zip.readUInt16LE(p + 32);
    records.push(zip.subarray(p, p + len));
    p += len;
  }
  const [r] = records.splice(from, 1);
  records.splice(to, 0, r!);
  return Buffer.concat([zip.subarray(0, cdOffset), ...records, zip.subarray(eocd)]);
}

/** Overwrites the signature of central directory record `n`, so the reader refuses the archive there. */
function damageCentralRecord(zip: Buffer, n: number): Buffer {
  const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  let p = zip.readUInt32LE(eocd + 16);
  for (let i = 0; i < n; i++) p += 46 + zip.readUInt16LE(p + 28) + zip.readUInt16LE(p + 30) + zip.readUInt16LE(p + 32);
  const out = Buffer.from(zip);
  out.writeUInt32LE(0x0badf00d, p);
  return out;
}

async function reference(dir: string, zip: string): Promise<{ root: string; blobs: string[] }> {
  const store = LocalStore.open(join(dir, `ref-${Math.random()}`));
  const r = await importArchive(zip, store, { jobs: 0 }); // no workers: nothing staged
  assert.equal(r.stagedAhead, 0);
  return { root: r.root.hash, blobs: [...store.listHashes()].sort() };
}

test('files staged while the archive is judged are committed: the same tree and blobs as without, no temporary file left', async () => {
  const dir = scratchDir();
  const zip = join(dir, 'a.zip');
  fs.writeFileSync(zip, craftZip(plainEntries()));
  const ref = await reference(dir, zip);
  for (const used of [false, true]) {
    const store = LocalStore.open(join(dir, used ? 'used' : 'fresh'));
    if (used) store.putSync(Buffer.from('file 3/1\nfile 3/1\n')); // one staged file's blob is already there
    const r = await importArchive(zip, store, { jobs: 2 });
    assert.ok(r.stagedAhead! > 100, `staged ${r.stagedAhead} files ahead`);
    assert.equal(r.root.hash, ref.root);
    assert.deepEqual([...store.listHashes()].sort(), ref.blobs);
    assert.deepEqual([...store.listTmpFiles()], []);
  }
});

test('a refused archive leaves the store as it was: the files staged before the refusal are removed', async () => {
  const dir = scratchDir();
  // 40,000 directories (never staged) before the last entry, so the workers have staged the
  // files well before the judge reaches it.
  const slowJudge: CraftEntry[] = Array.from({ length: 40_000 }, (_, i) => ({ name: `e${i}/` }));
  for (const [i, [bad, why, more]] of ([
    [{ name: '../escape', data: 'x' }, UnsafePathError, slowJudge],
    [{ name: 'd0/f1', data: 'again' }, UnsafePathError, []],
    [{ name: 'dev', data: '', mode: 0o020644 }, ArchiveError, []],
  ] as const).entries()) {
    const zip = join(dir, `bad${i}.zip`);
    fs.writeFileSync(zip, craftZip([...plainEntries(), ...more, bad]));
    const root = join(dir, `store${i}`);
    const store = LocalStore.open(root);
    const before = storeFiles(root);
    await assert.rejects(importArchive(zip, store, { jobs: 2, ref: 'r' }), why);
    assert.deepEqual(storeFiles(root), before, 'no blob, temporary file or ref added');
  }
});

test('a corrupt staged entry fails the import with the check that found it, and leaves no temporary file', async () => {
  const dir = scratchDir();
  const entries = plainEntries();
  entries[5] = { ...entries[5]!, crc: 12345 };
  const zip = join(dir, 'crc.zip');
  fs.writeFileSync(zip, craftZip(entries));
  const store = LocalStore.open(join(dir, 'store'));
  await assert.rejects(importArchive(zip, store, { jobs: 2 }), /CRC-32 mismatch|CRC disagrees/);
  assert.deepEqual([...store.listTmpFiles()], []);
});

test('a staged entry the judge bounds by a later central record is stored again, and its staged file removed', async () => {
  const dir = scratchDir();
  // Record 3 (d0/f2) moved to the end of the central directory: offsets still rise for records
  // 0-2, so d0/f1 is staged up to d0/f3's header, but the judge ends it at d0/f2's.
  const zip = join(dir, 'moved.zip');
  fs.writeFileSync(zip, moveCentralRecord(craftZip(plainEntries()), 3, plainEntries().length - 1));
  const ref = await reference(dir, zip);
  const unmoved = join(dir, 'unmoved.zip');
  fs.writeFileSync(unmoved, craftZip(plainEntries()));
  const all = (await importArchive(unmoved, LocalStore.open(join(dir, 'unmoved')), { jobs: 2 })).stagedAhead!;
  const store = LocalStore.open(join(dir, 'store'));
  const r = await importArchive(zip, store, { jobs: 2 });
  // The first staged batch held d0/f1: it is not committed; the later ones are.
  assert.ok(r.stagedAhead! > 0 && r.stagedAhead! <= all - 200, `staged ${r.stagedAhead} of ${all}`);
  assert.equal(r.root.hash, ref.root);
  assert.deepEqual([...store.listHashes()].sort(), ref.blobs);
  assert.deepEqual([...store.listTmpFiles()], []);
});

test('the central directory hands over its first headers before it reads the rest, also when it is refused later', () => {
  const dir = scratchDir();
  const entries: CraftEntry[] = Array.from({ length: 50 }, (_, i) => ({ name: `f${i}`, data: `${i}\n` }));
  const zip = join(dir, 'cd.zip');
  fs.writeFileSync(zip, damageCentralRecord(craftZip(entries), 30));
  const fd = fs.openSync(zip, 'r');
  try {
    const seen: string[][] = [];
    assert.throws(
      () => readCentralDirectory(fd, zip, { entries: 10, use: (cd) => seen.push(cd.entries.map((e) => e.name!)) }),
      (e: unknown) => e instanceof ArchiveError && /central header 30 is missing or damaged/.test(e.message),
    );
    assert.deepEqual(seen, [entries.slice(0, 10).map((e) => e.name)], 'the first 10 headers, once, before the refusal');
  } finally {
    fs.closeSync(fd);
  }
  // A prefix as long as the archive, or longer, is the whole directory, handed over once.
  fs.writeFileSync(zip, craftZip(entries));
  const fd2 = fs.openSync(zip, 'r');
  try {
    for (const n of [50, 80]) {
      const seen: number[] = [];
      const cd = readCentralDirectory(fd2, zip, { entries: n, use: (c) => seen.push(c.entries.length) });
      assert.deepEqual(seen, [50]);
      assert.equal(cd.entries.length, 50);
    }
  } finally {
    fs.closeSync(fd2);
  }
});

test('an archive whose central directory is refused after the head start began leaves no staged file in the store', async () => {
  const dir = scratchDir();
  // More files than the head start's prefix of headers, then directories (never staged) up to
  // the most entries a zip without Zip64 holds, with long names, and the damaged header: the
  // workers stage files from the prefix while the reader goes on.
  const prefix = aheadEntries(2, DEFAULT_BATCH_LIMITS.entries);
  const entries = plainEntries(Math.ceil(prefix / 12));
  const long = 'x'.repeat(240);
  while (entries.length < 0xffff) entries.push({ name: `e${entries.length}${long}/` });
  const zip = join(dir, 'late.zip');
  fs.writeFileSync(zip, damageCentralRecord(craftZip(entries), entries.length - 1));
  const root = join(dir, 'store');
  const store = LocalStore.open(root);
  const before = storeFiles(root);
  await assert.rejects(importArchive(zip, store, { jobs: 2, ref: 'r' }), (e: unknown) => e instanceof ArchiveError && /central header \d+ is missing or damaged/.test(e.message));
  assert.deepEqual(storeFiles(root), before, 'no blob, temporary file or ref added');
});

/** A pool whose batches run only when the test says (`runAt`), on the test's thread. */
function handPool(store: LocalStore): StagingPool & { posted: { payload: IngestBatch; settle: (r: StagedResult) => void }[]; runAt: (n: number) => StagedResult } {
  const posted: { payload: IngestBatch; settle: (r: StagedResult) => void }[] = [];
  const ctx = { store, state: new Map<string, unknown>() };
  return {
    size: 2,
    posted,
    run: (<T>(_op: string, payload: unknown) => new Promise<T>((resolve) => posted.push({ payload: payload as IngestBatch, settle: resolve as (r: StagedResult) => void }))) as StagingPool['run'],
    runAt(n: number): StagedResult {
      const r = stageArchiveBatch(posted[n]!.payload, ctx);
      posted[n]!.settle(r);
      return r;
    },
  };
}

/** Reads `zip`'s central directory with a head start on `pool`, as import does (the first headers, then the whole directory). */
function stageFrom(zip: string, pool: StagingPool): { ahead: StagedAhead; judged: ReturnType<typeof judgeEntries> } {
  const limits = { ...DEFAULT_BATCH_LIMITS, maxRatio: 1000, maxSize: Number.MAX_SAFE_INTEGER };
  let ahead: StagedAhead | undefined;
  const fd = fs.openSync(zip, 'r');
  try {
    const cd = readCentralDirectory(fd, zip, { entries: aheadEntries(pool.size, limits.entries), use: (c) => (ahead = new StagedAhead(pool, zip, c, limits)), whole: (c) => ahead!.more(c) });
    return { ahead: ahead!, judged: judgeEntries(cd.entries, cd.cdOffset, limits) };
  } finally {
    fs.closeSync(fd);
  }
}

test('batches staged from the whole central directory run only until the archive is judged: the rest are cancelled and left to the ordinary batches', async () => {
  const dir = scratchDir();
  const zip = join(dir, 'more.zip');
  // More files than the first headers handed over, so there is a second wave to stage.
  fs.writeFileSync(zip, craftZip(plainEntries(Math.ceil((1.3 * aheadEntries(2, DEFAULT_BATCH_LIMITS.entries)) / 12))));
  const store = LocalStore.open(join(dir, 'store'));
  const pool = handPool(store);
  const { ahead, judged } = stageFrom(zip, pool);
  const first = 2 * 20; // BATCHES_PER_WORKER for each of the 2 workers
  assert.ok(pool.posted.length > first + 1, `${pool.posted.length} batches staged`);
  // The workers ran the first wave and one batch of the second before the judge was done.
  for (let n = 0; n <= first; n++) assert.notEqual(pool.runAt(n).skipped, true);
  const taken = ahead.accept(judged.entries, () => false);
  const ran = pool.posted.slice(0, first + 1).flatMap((b) => b.payload.files.map((f) => (f as unknown as { index: number }).index));
  assert.deepEqual([...taken].sort((a, b) => a - b), ran.sort((a, b) => a - b), 'the batches run are taken, no other');
  // A worker that reaches a cancelled batch afterwards skips it: nothing read, nothing written.
  for (let n = first + 1; n < pool.posted.length; n++) assert.deepEqual(pool.runAt(n), { hashes: [], tmps: [], skipped: true });
  const committed: number[] = [];
  await ahead.commit((e, hash, tmp) => {
    if (tmp !== '') store.commitTmp(tmp, hash);
    assert.ok(store.hasSync({ hash, size: e.size }));
    committed.push(e.index);
  });
  await ahead.discard();
  assert.deepEqual(committed.sort((a, b) => a - b), ran);
  assert.deepEqual([...store.listTmpFiles()], []);
});

test('a refused archive cancels the staged batches no worker has started (the refusal waits only for those running)', async () => {
  const dir = scratchDir();
  const zip = join(dir, 'refused.zip');
  fs.writeFileSync(zip, craftZip(plainEntries()));
  const store = LocalStore.open(join(dir, 'store'));
  const pool = handPool(store);
  const { ahead } = stageFrom(zip, pool);
  assert.ok(pool.posted.length > 2);
  const ran = pool.runAt(0); // one batch was running when the archive was refused
  assert.ok(ran.tmps.some((t) => t !== ''));
  const discarded = ahead.discard();
  for (let n = 1; n < pool.posted.length; n++) assert.equal(pool.runAt(n).skipped, true, `batch ${n} skipped`);
  await discarded;
  assert.deepEqual([...store.listTmpFiles()], [], "the running batch's files removed too");
});
