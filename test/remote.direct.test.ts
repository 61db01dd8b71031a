/**
 * `checkout --remote --direct`: fetched files are written straight into the target, each verified
 * first, and no file blob (but the one too large to hold in memory) enters the store. Against a
 * real treecast server on loopback, with and without its batch endpoints, and a corrupting proxy.
 * The record it leaves must serve status and later updates without claiming blobs it lacks.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { digestOf, formatDigest } from '../src/core/digest.js';
import { snapshot } from '../src/capture/snapshot.js';
import { LocalStore } from '../src/store/local.js';
import { TreeReader } from '../src/store/tree-reader.js';
import { DIRECT_MAX_BYTES } from '../src/materialize/execute.js';
import { BATCH_BLOBS, DIRECT_BATCH_BLOBS } from '../src/remote/fetch.js';
import { describeTree, duplicateSends, json, leftoverTmp, makeTree, removeDir, runCli, startCli, startServer, tempDir, waitExit, type TestServer } from './helpers/remote.js';
import { startProxy } from './helpers/remote-proxy.js';
import { canMount, withTmpfs } from './helpers/mounts.js';

/** The hashes of the tree's non-empty file blobs, by size. */
/** Whether a regular file is anywhere under DIR (an absent DIR holds none). */
function holdsAFile(dir: string): boolean {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return false;
  }
  return entries.some((e) => e.isFile() || (e.isDirectory() && holdsAFile(join(dir, e.name))));
}

async function fileBlobs(store: LocalStore, root: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const e of new TreeReader(store).walk(store.resolve(root))) if (e.type === 'file' && e.digest.size > 0) out.set(e.digest.hash, e.digest.size);
  return out;
}

describe('checkout --remote --direct', () => {
  let dir: string;
  let server: TestServer;
  let plain: TestServer;
  let root: string;
  let files: Map<string, number>;
  const src = () => join(dir, 'src');

  before(async () => {
    dir = tempDir('direct');
    // Ten batches of writes and more, so fetch buffers are reused; one file over the in-memory
    // limit, which must still arrive whole (through the store).
    makeTree(src(), 200, 13, DIRECT_MAX_BYTES + 4096);
    fs.copyFileSync(join(src(), 'd0001/f0.txt'), join(src(), 'd0002/copy-of-f0.txt'));
    const serverStore = LocalStore.open(join(dir, 'server'));
    root = formatDigest((await snapshot(src(), { store: serverStore })).digest);
    files = await fileBlobs(serverStore, root);
    server = await startServer(join(dir, 'server'));
    plain = await startServer(join(dir, 'server'), { batch: false });
  });
  after(async () => {
    await server?.close();
    await plain?.close();
    removeDir(dir);
  });

  /** Runs `args`, sends SIGTERM once `server` sent 300 blobs, and checks it stopped with exit 130 before the last. */
  // The cut comes once the server has sent 300 blobs and a file is in OUT: on a loaded machine the
  // server's count alone ran ahead of the client, whose SIGTERM then came before it wrote anything.
  async function cutMidway(args: string[], server: TestServer, out: string): Promise<void> {
    const child = startCli(args);
    const sent = () => server.log.reduce((n, e) => n + (e.sent?.length ?? 0), 0);
    const until = Date.now() + 20_000;
    while ((sent() < 300 || !holdsAFile(out)) && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    child.kill('SIGTERM');
    const first = await waitExit(child);
    assert.equal(first.code, 130, first.stderr);
    assert.ok(sent() < files.size, `cut in the middle (${sent()} of ${files.size} blobs sent)`);
  }

  for (const mode of ['batch', 'plain'] as const) {
    test(`${mode}: the tree arrives exactly and no file blob is stored, not even the one too large for memory`, async () => {
      const url = mode === 'batch' ? server.url : `${plain.url}some/instance/`;
      const out = join(dir, `out-${mode}`);
      const store = join(dir, `store-${mode}`);
      const r = await runCli(['checkout', root, out, '--remote', url, '--store', store, '--direct', '--json', '--concurrency', '4']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(describeTree(out), describeTree(src()));
      const j = json(r);
      assert.equal(j.method, 'copy');
      assert.equal((j.remote as { batch: boolean }).batch, mode === 'batch');
      const stored = new Set(LocalStore.open(store).listHashes());
      const storedFiles = [...files].filter(([h]) => stored.has(h));
      assert.deepEqual(storedFiles.map(([, size]) => size), [], 'no file blob went through the store');
      assert.equal(fs.statSync(join(out, 'big.bin')).size, DIRECT_MAX_BYTES + 4096);
      assert.deepEqual(leftoverTmp(store), []);
    });
  }

  test('SIGTERM mid --direct: exit 130, every file already at its name exact, no temp file left; the same command then completes the tree', async () => {
    const slow = await startServer(join(dir, 'server'), { latencyMs: 150 });
    const out = join(dir, 'out-term');
    const store = join(dir, 'store-term');
    try {
      const args = ['checkout', root, out, '--remote', slow.url, '--store', store, '--direct', '--concurrency', '4'];
      await cutMidway(args, slow, out);
      // What is there is whole: each file matches the source byte for byte, and no temporary name
      // (fetch-file.ts) or other stray entry was left behind.
      const written = describeTree(out).filter((l) => !l.startsWith('D '));
      const wanted = new Set(describeTree(src()));
      assert.ok(written.length > 0, 'some files were written before the cut');
      assert.ok(written.length < wanted.size, 'the cut came before the last file');
      for (const l of written) assert.ok(wanted.has(l), `written whole: ${l}`);
      const second = await runCli(args);
      assert.equal(second.code, 0, second.stderr);
      assert.deepEqual(describeTree(out), describeTree(src()));
      assert.deepEqual(leftoverTmp(store), []);
    } finally {
      await slow.close();
    }
  });

  // A plain hardlink checkout reads its batches as large as --direct's (256 blobs / 4 MiB, one
  // request each): a SIGTERM must still let the batches in flight finish, leave every file it wrote
  // whole and the store's own blob, nothing part-written in the store, and a state the same
  // command completes without fetching a blob twice.
  test('SIGTERM mid checkout --remote --method hardlink: exit 130, each written file whole and the stored blob, the store holds only verified blobs; the same command completes the tree', async () => {
    const slow = await startServer(join(dir, 'server'), { latencyMs: 150 });
    const out = join(dir, 'out-term-hardlink');
    const storeDir = join(dir, 'store-term-hardlink');
    try {
      const args = ['checkout', root, out, '--remote', slow.url, '--store', storeDir, '--method', 'hardlink', '--concurrency', '4'];
      await cutMidway(args, slow, out);
      const store = LocalStore.open(storeDir);
      const storedVerified = () => {
        const stored = [...store.listHashes()].filter((h) => files.has(h));
        for (const h of stored) store.readSync({ hash: h, size: files.get(h)! }); // whole, and verifies
        assert.deepEqual(leftoverTmp(storeDir), []);
        return stored.length;
      };
      assert.ok(storedVerified() > 0, 'the batches in flight stored their blobs');
      const wanted = new Set(describeTree(src()));
      const written = describeTree(out).filter((l) => l.startsWith('F '));
      assert.ok(written.length > 0 && written.length < files.size, `cut after some files were written (${written.length})`);
      for (const l of written) assert.ok(wanted.has(l), `written whole: ${l}`);
      for (const l of written) {
        const rel = l.split(' ')[1]!;
        const st = fs.statSync(join(out, rel));
        if (st.size === 0 || st.mode & 0o100) continue; // the empty file and the executable twin
        assert.equal(st.ino, fs.statSync(store.blobPath(digestOf(fs.readFileSync(join(out, rel))).hash)).ino, `${rel} is the stored blob`);
      }
      const second = await runCli(args);
      assert.equal(second.code, 0, second.stderr);
      assert.deepEqual(describeTree(out), describeTree(src()));
      assert.deepEqual(duplicateSends(slow.log), []);
      assert.equal(storedVerified(), files.size);
    } finally {
      await slow.close();
    }
  });

  // Both plain methods read a batch of the checkout in one large request (--direct's 256 blobs /
  // 4 MiB), not in 64-blob pieces.
  for (const method of ['copy', 'hardlink'] as const) {
    test(`plain checkout --remote --method ${method} reads its blobs in batches of up to ${DIRECT_BATCH_BLOBS}, not ${BATCH_BLOBS}`, async () => {
      const from = server.log.length;
      const out = join(dir, `out-batches-${method}`);
      const r = await runCli(['checkout', root, out, '--remote', server.url, '--store', join(dir, `store-batches-${method}`), '--method', method]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(describeTree(out), describeTree(src()));
      const reads = server.log.slice(from).filter((e) => e.path.endsWith('/read')).map((e) => e.sent?.length ?? 0);
      assert.ok(Math.max(...reads) > BATCH_BLOBS && Math.max(...reads) <= DIRECT_BATCH_BLOBS, `blobs per batch read: ${reads.join(', ')}`);
      assert.ok(reads.length < files.size / BATCH_BLOBS, `${reads.length} batch reads for ${files.size} blobs`);
    });
  }

  // A plain copy checkout (the default) holds up to 4 x 256 blobs in flight: a SIGTERM must still
  // stop it part way, with every file it wrote whole, only verified blobs stored and nothing part-
  // written, and a state the same command completes without fetching a blob twice.
  test('SIGTERM mid checkout --remote (copy): exit 130, each written file whole, the store holds only verified blobs; the same command completes the tree', async () => {
    const slow = await startServer(join(dir, 'server'), { latencyMs: 150 });
    const out = join(dir, 'out-term-copy');
    const storeDir = join(dir, 'store-term-copy');
    try {
      const args = ['checkout', root, out, '--remote', slow.url, '--store', storeDir, '--concurrency', '4'];
      await cutMidway(args, slow, out);
      const store = LocalStore.open(storeDir);
      const stored = [...store.listHashes()].filter((h) => files.has(h));
      for (const h of stored) store.readSync({ hash: h, size: files.get(h)! }); // whole, and verifies
      assert.ok(stored.length > 0, 'the batches in flight stored their blobs');
      assert.deepEqual(leftoverTmp(storeDir), []);
      const wanted = new Set(describeTree(src()));
      const written = describeTree(out).filter((l) => l.startsWith('F '));
      assert.ok(written.length > 0 && written.length < files.size, `cut after some files were written (${written.length})`);
      for (const l of written) assert.ok(wanted.has(l), `written whole: ${l}`);
      const second = await runCli(args);
      assert.equal(second.code, 0, second.stderr);
      assert.deepEqual(describeTree(out), describeTree(src()));
      assert.deepEqual(duplicateSends(slow.log), []);
    } finally {
      await slow.close();
    }
  });

  test('a corrupted blob is refused by digest and server, and no file is created from its bytes', async () => {
    const proxy = await startProxy({ upstream: server.url, fault: (method, path) => (method === 'POST' && path.endsWith('/read') ? 'corrupt' : 'pass') });
    const out = join(dir, 'out-corrupt');
    const store = join(dir, 'store-corrupt');
    try {
      const r = await runCli(['checkout', root, out, '--remote', proxy.url, '--store', store, '--direct', '--retries', '1']);
      assert.equal(r.code, 5, r.stderr);
      assert.match(r.stderr, /ERR_TREECAST_DIGEST_MISMATCH/);
      assert.match(r.stderr, new RegExp(`[0-9a-f]{64}/\\d+ from ${proxy.url.replace(/[/.]/g, '\\$&')}`));
      // Every regular file that exists holds the bytes the tree gives it (or none was written).
      const want = new Map(describeTree(src()).map((l) => [l.split(' ')[1], l]));
      for (const line of describeTree(out)) if (line.startsWith('F ')) assert.equal(line, want.get(line.split(' ')[1]), 'a written file is whole and right');
      const stored = new Set(LocalStore.open(store).listHashes());
      assert.deepEqual([...files.keys()].filter((h) => stored.has(h) && files.get(h)! <= DIRECT_MAX_BYTES), []);
    } finally {
      await proxy.close();
    }
  });

  test('a corrupted blob too large for memory is refused, and nothing is created at its name', async () => {
    const big = [...files].find(([, size]) => size > DIRECT_MAX_BYTES)![0];
    const proxy = await startProxy({ upstream: server.url, fault: (method, path) => (method === 'GET' && path.endsWith(`/cas/${big}`) ? 'corrupt' : 'pass') });
    const out = join(dir, 'out-corrupt-big');
    try {
      const r = await runCli(['checkout', root, out, '--remote', proxy.url, '--store', join(dir, 'store-corrupt-big'), '--direct', '--retries', '1']);
      assert.equal(r.code, 5, r.stderr);
      assert.match(r.stderr, /ERR_TREECAST_DIGEST_MISMATCH/);
      assert.match(r.stderr, new RegExp(`${big}/${DIRECT_MAX_BYTES + 4096} from ${proxy.url.replace(/[/.]/g, '\\$&')}`));
      assert.ok(proxy.requests.some((q) => q.path.endsWith(`/cas/${big}`)), 'the large blob was asked for');
      assert.equal(fs.existsSync(join(out, 'big.bin')), false, 'no file from bytes that failed their digest');
      assert.deepEqual(fs.readdirSync(out).filter((n) => n.startsWith('.treecast-')), [], 'no temporary file left');
    } finally {
      await proxy.close();
    }
  });

  test('a batch answered in another order than asked is refused, with and without --direct', async () => {
    const proxy = await startProxy({ upstream: server.url, fault: (method, path) => (method === 'POST' && path.endsWith('/read') ? 'reorder' : 'pass') });
    try {
      for (const direct of [true, false]) {
        const out = join(dir, `out-reorder-${direct}`);
        const r = await runCli(['checkout', root, out, '--remote', proxy.url, '--store', join(dir, `store-reorder-${direct}`), ...(direct ? ['--direct'] : []), '--retries', '1']);
        assert.notEqual(r.code, 0, r.stderr);
        assert.match(r.stderr, /ERR_TREECAST_REMOTE_PROTOCOL/);
        assert.match(r.stderr, /answered a batch read out of order/);
      }
    } finally {
      await proxy.close();
    }
  });

  test('status and updates work from its record; an update with no remote names the blob it lacks', async () => {
    const out = join(dir, 'out-update');
    const store = join(dir, 'store-update');
    let r = await runCli(['checkout', root, out, '--remote', server.url, '--store', store, '--direct']);
    assert.equal(r.code, 0, r.stderr);
    r = await runCli(['status', out, '--store', store, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual([json(r).modified, json(r).added, json(r).removed], [[], [], []]);
    // A local edit shows, though the store has no blob to compare the file with.
    fs.writeFileSync(join(out, 'd0001/f1.txt'), 'edited here\n');
    r = await runCli(['status', out, '--store', store, '--json']);
    assert.deepEqual(json(r).modified, ['d0001/f1.txt']);
    fs.rmSync(join(out, 'd0001/f1.txt'));
    fs.copyFileSync(join(src(), 'd0001/f1.txt'), join(out, 'd0001/f1.txt'));

    // A second tree on the server: one file changed, one added.
    const next = join(dir, 'src2');
    fs.cpSync(src(), next, { recursive: true, verbatimSymlinks: true });
    fs.writeFileSync(join(next, 'd0004/f2.txt'), 'changed on the server\n');
    fs.writeFileSync(join(next, 'added.txt'), 'new on the server\n');
    const root2 = formatDigest((await snapshot(next, { store: server.store })).digest);

    // Without --remote the update cannot be made: it names the blob, and leaves the files alone.
    r = await runCli(['checkout', root2, out, '--store', store]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /ERR_TREECAST_BLOB_NOT_FOUND/);
    assert.match(r.stderr, /[0-9a-f]{64}\/\d+/);
    assert.deepEqual(describeTree(out), describeTree(src()));

    // With --remote --direct it touches only what differs, and stores no file blob.
    r = await runCli(['checkout', root2, out, '--remote', server.url, '--store', store, '--direct', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(describeTree(out), describeTree(next));
    assert.equal(json(r).copied, 2);
    const stored = new Set(LocalStore.open(store).listHashes());
    const all = await fileBlobs(server.store, root2);
    assert.deepEqual([...all].filter(([h, size]) => stored.has(h) && size <= DIRECT_MAX_BYTES), []);
  });

  test('--direct without --remote, or with a method that needs the store, is a usage error', async () => {
    let r = await runCli(['checkout', root, join(dir, 'x'), '--store', join(dir, 'x-store'), '--direct']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--direct needs --remote/);
    r = await runCli(['checkout', root, join(dir, 'x'), '--remote', server.url, '--store', join(dir, 'x-store'), '--direct', '--method', 'hardlink']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--direct writes copies/);
    assert.equal(fs.existsSync(join(dir, 'x')), false);
  });

  // A plain `checkout --remote` whose method is copy fetches each blob the store lacks into memory
  // once, and its worker writes it into the store and the target from there, after its digest
  // matched (execute.ts, apply-op.ts).
  // --method hardlink fetches the same way: the workers store each blob from memory, and the file
  // is a link to the stored blob (the read-only inode every hardlink checkout shares).
  for (const method of ['copy', 'hardlink'] as const)
  test(`plain checkout --remote (${method}): every blob fetched once, stored verified, the file ${method === 'copy' ? 'a separate copy' : 'linked to it'}`, async () => {
    const out = join(dir, `out-through-${method}`);
    const storeDir = join(dir, `store-through-${method}`);
    const logFrom = server.log.length;
    // The first batch read (which holds the first directory's "shared" file, also in every later
    // batch) answers last: the later batches must wait for it to be stored, not fetch it again.
    let reads = 0;
    const proxy = await startProxy({ upstream: server.url, delay: (method, path) => (method === 'POST' && path.endsWith('/read') && reads++ === 0 ? 1500 : 0) });
    const r = await runCli(['checkout', root, out, '--remote', proxy.url, '--store', storeDir, '--json', '--concurrency', '4', '--method', method]).finally(() => proxy.close());
    assert.equal(r.code, 0, r.stderr);
    const j = json(r) as { method: string; hardlinked: number; copied: number };
    assert.equal(j.method, method);
    if (method === 'hardlink') assert.equal(j.copied, 0);
    assert.deepEqual(describeTree(out), describeTree(src()));
    // Every tenth file repeats another directory's content, in other batches: still one fetch each.
    assert.deepEqual(duplicateSends(server.log.slice(logFrom)), []);
    const store = LocalStore.open(storeDir);
    const stored = new Set(store.listHashes());
    assert.deepEqual([...files.keys()].filter((h) => !stored.has(h)), [], 'every file blob is in the store');
    for (const [hash, size] of files) store.readSync({ hash, size }); // each verifies
    assert.deepEqual(leftoverTmp(storeDir), []);
    const blobOf = (file: string) => store.blobPath(digestOf(fs.readFileSync(file)).hash);
    if (method === 'hardlink') {
      for (const rel of ['d0001/f0.txt', 'd0002/copy-of-f0.txt', 'big.bin']) assert.equal(fs.statSync(join(out, rel)).ino, fs.statSync(blobOf(join(out, rel))).ino, `${rel} is the stored blob`);
      // An executable is the blob's executable twin (written once, write-linked.ts), beside its plain blob.
      const run = fs.statSync(join(out, 'run.sh'));
      assert.equal(run.ino, fs.statSync(store.executableBlobPath(digestOf(fs.readFileSync(join(out, 'run.sh'))).hash)).ino, 'run.sh is the executable twin');
      assert.equal(run.mode & 0o777, 0o555);
      return;
    }
    // A later write to the checked-out file leaves the store as it was.
    const file = join(out, 'd0001', 'f0.txt');
    const blob = blobOf(file);
    assert.notEqual(fs.statSync(file).ino, fs.statSync(blob).ino);
    fs.appendFileSync(file, 'local edit');
    assert.ok(!fs.readFileSync(blob).toString().endsWith('local edit'));
  });

  for (const method of ['copy', 'hardlink'] as const)
  test(`plain checkout --remote (${method}): a corrupted blob enters neither the store nor the target`, async () => {
    const proxy = await startProxy({ upstream: server.url, fault: (method, path) => (method === 'POST' && path.endsWith('/read') ? 'corrupt' : 'pass') });
    const out = join(dir, `out-through-corrupt-${method}`);
    const storeDir = join(dir, `store-through-corrupt-${method}`);
    try {
      const r = await runCli(['checkout', root, out, '--remote', proxy.url, '--store', storeDir, '--retries', '1', '--concurrency', '4', '--method', method]);
      assert.equal(r.code, 5, r.stderr);
      assert.match(r.stderr, /ERR_TREECAST_DIGEST_MISMATCH/);
      assert.match(r.stderr, new RegExp(`[0-9a-f]{64}/\\d+ from ${proxy.url.replace(/[/.]/g, '\\$&')}`));
      const want = new Map(describeTree(src()).map((l) => [l.split(' ')[1], l]));
      for (const line of describeTree(out)) if (line.startsWith('F ')) assert.equal(line, want.get(line.split(' ')[1]), 'a written file is whole and right');
      const store = LocalStore.open(storeDir);
      const stored = [...store.listHashes()].filter((h) => files.has(h));
      assert.ok(stored.length > 0, 'the good blobs of the batches were stored');
      for (const h of stored) store.readSync({ hash: h, size: files.get(h)! }); // each verifies
      assert.deepEqual(leftoverTmp(storeDir), []);
    } finally {
      await proxy.close();
    }
  });

  // A hardlink checkout writes each fetched file at its name and links it into the store
  // (write-linked.ts); with the target on another filesystem than the store, that link is refused
  // (EXDEV) and the old path takes over: the file is a copy with the copy's mode, the store writes
  // its own blob, and every later file of the batch is copied.
  test('plain checkout --remote --method hardlink into another filesystem: the tree arrives as copies, every blob stored verified', { skip: canMount() }, async () => {
    const storeDir = join(dir, 'store-through-exdev');
    await withTmpfs('64m', async (mnt) => {
      const out = join(mnt, 'out');
      const r = await runCli(['checkout', root, out, '--remote', server.url, '--store', storeDir, '--json', '--concurrency', '4', '--method', 'hardlink']);
      assert.equal(r.code, 0, r.stderr);
      const j = json(r) as { hardlinked: number; copied: number; fallbacks: number; fallbackReason?: string };
      assert.equal(j.hardlinked, 0);
      assert.ok(j.copied > 0 && j.fallbacks > 0, JSON.stringify(j));
      assert.equal(j.fallbackReason, 'EXDEV');
      assert.deepEqual(describeTree(out), describeTree(src()));
      const umask = process.umask();
      const store = LocalStore.open(storeDir);
      for (const [hash, size] of files) store.readSync({ hash, size }); // each is there, and verifies
      assert.deepEqual(leftoverTmp(storeDir), []);
      // Every file is a copy, with the copy's mode (not the blob's read-only one), the first of
      // each batch (refused its link into the store) as much as the ones after it.
      const walk = (d: string): string[] => fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : e.isFile() ? [join(d, e.name)] : []));
      for (const f of walk(out)) {
        const st = fs.statSync(f);
        assert.equal(st.mode & 0o777, (st.mode & 0o100 ? 0o777 : 0o666) & ~umask, `${f} has the copy mode`);
        assert.equal(st.nlink, 1, `${f} is its own inode`);
      }
    });
  });
});
