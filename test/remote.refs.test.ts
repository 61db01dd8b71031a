/**
 * Remote refs through the action cache, against real peers: nginx as a WebDAV Bazel cache (the
 * way Bazel documents it) and treecast's own server. The CLI runs as a child process.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { execFile, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { encodeActionResult, encodeTree } from '../src/core/action-result.js';
import { type Digest, digestOf, formatDigest, parseDigest } from '../src/core/digest.js';
import { encodeDirectory } from '../src/core/reapi.js';
import { REF_NAMESPACE, refEntry, refKey, resolveRemoteRef } from '../src/remote/refs.js';
import { RemoteFetcher } from '../src/remote/fetch.js';
import { LocalStore } from '../src/store/local.js';
import { type Nginx, findNginx, startNginx } from './helpers/remote-nginx.js';
import { type Proxy, startProxy } from './helpers/remote-proxy.js';
import { BIN, type TestServer, describeTree, json, makeTree, removeDir, runCli, startServer, tempDir } from './helpers/remote.js';

const nginxBin = findNginx();
const base = tempDir('refs');
const src = join(base, 'src');
const other = join(base, 'other');
let nginx: Nginx;
let n = 0;
/** A fresh, empty store path per use. */
const freshStore = (): string => join(base, `store-${n++}`);
const freshDir = (): string => join(base, `out-${n++}`);

before(async () => {
  makeTree(src, 12, 8, 3 << 20);
  makeTree(other, 3, 2);
  fs.writeFileSync(join(other, 'marker'), 'the other tree\n');
  if (nginxBin) nginx = await startNginx(nginxBin, join(base, 'nginx'));
});
after(async () => {
  await nginx?.stop();
  removeDir(base);
});

/** Pushes DIR to URL under NAME with a new store; returns the JSON summary. */
async function pushRef(dir: string, url: string, name: string): Promise<Record<string, unknown>> {
  const r = await runCli(['push', dir, url, '--ref', name, '--store', freshStore(), '--json']);
  assert.equal(r.code, 0, r.stderr);
  return json(r);
}

/** Writes an action cache entry straight into nginx's folder, as a hostile server would serve it. */
function plantEntry(name: string, bytes: Buffer): void {
  fs.mkdirSync(join(nginx.root, 'ac'), { recursive: true });
  fs.writeFileSync(join(nginx.root, 'ac', refKey(name)), bytes);
}
function plantBlob(bytes: Buffer): Digest {
  const d = digestOf(bytes);
  fs.mkdirSync(join(nginx.root, 'cas'), { recursive: true });
  fs.writeFileSync(join(nginx.root, 'cas', d.hash), bytes);
  return d;
}

describe('remote refs against nginx (WebDAV)', { skip: nginxBin ? false : 'nginx is not installed (apt-get install nginx-light)' }, () => {
  test('push --ref, then checkout NAME on an empty store gives the same tree; the key is sha256 of the documented string', async () => {
    const pushed = await pushRef(src, nginx.url, 'deps-abc');
    const ref = pushed.ref as { key: string; tree: string };
    // The key, computed as the documentation tells a reader to.
    const shell = execFileSync('sh', ['-c', `printf '${REF_NAMESPACE}%s' deps-abc | sha256sum`], { encoding: 'utf8' }).split(' ')[0];
    assert.equal(ref.key, shell);
    // nginx stored exactly the entry treecast documents: one OutputDirectory, tree and root.
    const entry = fs.readFileSync(join(nginx.root, 'ac', shell!));
    const root = (pushed.root as string).split('/');
    const tree = ref.tree.split('/');
    assert.deepEqual(entry, refEntry({ hash: root[0]!, size: Number(root[1]) }, { hash: tree[0]!, size: Number(tree[1]) }));

    fs.writeFileSync(nginx.accessLog, '');
    const out = freshDir();
    const r = await runCli(['checkout', 'deps-abc', out, '--remote', nginx.url, '--store', freshStore(), '--json']);
    assert.equal(r.code, 0, r.stderr);
    const j = json(r);
    assert.deepEqual(describeTree(out), describeTree(src));
    assert.equal(j.digest, pushed.root);
    assert.deepEqual(j.remoteRef, { name: 'deps-abc', key: shell, digest: pushed.root, tree: ref.tree, fallback: false, missed: [] });
    // Every Directory came from the one Tree message: no GET of a Directory blob.
    const gets = fs.readFileSync(nginx.accessLog, 'utf8').split('\n').filter((l) => l.includes('"GET '));
    assert.equal(gets.filter((l) => l.includes(`/ac/${shell}`)).length, 1);
    assert.equal(gets.filter((l) => l.includes(`/cas/${tree[0]}`)).length, 1);
    const dirHashes = lsHashes(src, 'dir');
    assert.ok(dirHashes.length > 12);
    for (const h of dirHashes) assert.ok(!gets.some((l) => l.includes(`/cas/${h}`)), `Directory ${h} fetched by itself`);
    const remote = j.remote as { requests: number; files: number };
    assert.ok(remote.requests <= remote.files + 4, `${remote.requests} requests for ${remote.files} files`);
  });

  test('--fallback: a missing first key hits the second; summary and --json say which', async () => {
    await pushRef(other, nginx.url, 'deps-main');
    const out = freshDir();
    const r = await runCli(['checkout', 'deps-0123456789ab', out, '--remote', nginx.url, '--fallback', 'deps-nope', '--fallback', 'deps-main', '--store', freshStore(), '--json']);
    assert.equal(r.code, 0, r.stderr);
    const hit = json(r).remoteRef as { name: string; fallback: boolean; missed: { name: string; reason: string }[] };
    assert.equal(hit.name, 'deps-main');
    assert.equal(hit.fallback, true);
    assert.deepEqual(hit.missed.map((m) => [m.name, m.reason]), [['deps-0123456789ab', 'absent'], ['deps-nope', 'absent']]);
    assert.deepEqual(describeTree(out), describeTree(other));
    const plain = await runCli(['checkout', 'deps-0123456789ab', freshDir(), '--remote', nginx.url, '--fallback', 'deps-main', '--store', freshStore()]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stderr, /ref 'deps-main' found on the remote \(fallback; 'deps-0123456789ab' missed\)/);
  });

  test('a miss on every key is exit 3 naming the keys tried, and writes nothing', async () => {
    const out = freshDir();
    const r = await runCli(['checkout', 'deps-x', out, '--remote', nginx.url, '--fallback', 'deps-y', '--store', freshStore(), '--json']);
    assert.equal(r.code, 3, r.stderr);
    const err = json(r).error as { code: string; tried: { name: string; key: string }[] };
    assert.equal(err.code, 'ERR_TREECAST_REMOTE_REF_NOT_FOUND');
    assert.deepEqual(err.tried.map((t) => [t.name, t.key]), [['deps-x', refKey('deps-x')], ['deps-y', refKey('deps-y')]]);
    assert.ok(!fs.existsSync(out));
    const text = await runCli(['checkout', 'deps-x', out, '--remote', nginx.url, '--store', freshStore()]);
    assert.equal(text.code, 3);
    assert.match(text.stderr, new RegExp(`deps-x \\(ac/${refKey('deps-x')}\\): no entry`));
  });

  test('pull NAME URL --ref LOCAL records the local ref; refs --remote tells which names exist', async () => {
    const pushed = await pushRef(other, nginx.url, 'tools/v1');
    const store = freshStore();
    const r = await runCli(['pull', 'tools/v1', nginx.url, '--ref', 'tools', '--store', store, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(json(r).root, pushed.root);
    assert.equal(formatDigest(LocalStore.open(store).readRef('tools')!), pushed.root);
    const out = freshDir();
    assert.equal((await runCli(['checkout', 'tools', out, '--store', store])).code, 0);
    assert.deepEqual(describeTree(out), describeTree(other));

    const found = await runCli(['refs', '--remote', nginx.url, 'tools/v1', 'tools/v2', '--json']);
    assert.equal(found.code, 3);
    assert.deepEqual((json(found).refs as { name: string; digest: string | null }[]).map((x) => [x.name, x.digest]), [['tools/v1', pushed.root], ['tools/v2', null]]);
    const text = await runCli(['refs', '--remote', nginx.url, 'tools/v1']);
    assert.equal(text.code, 0, text.stderr);
    assert.equal(text.stdout, `${pushed.root} tools/v1\n`);
  });

  test('an entry naming a blob the server lacks is a miss (the fallback hits), never a partial checkout', async () => {
    await pushRef(src, nginx.url, 'broken');
    await pushRef(other, nginx.url, 'good');
    // Take one file blob of `src` away from the server (as an eviction would), one `other` lacks.
    const theirs = new Set(lsHashes(other, 'file'));
    const victim = lsHashes(src, 'file').find((h) => !theirs.has(h))!;
    fs.rmSync(join(nginx.root, 'cas', victim));
    try {
      const out = freshDir();
      const r = await runCli(['checkout', 'broken', out, '--remote', nginx.url, '--store', freshStore(), '--json']);
      assert.equal(r.code, 3, r.stderr);
      assert.equal((json(r).error as { tried: { reason: string }[] }).tried[0]!.reason, 'incomplete');
      assert.ok(!fs.existsSync(out), 'nothing written for an incomplete tree');
      const r2 = await runCli(['checkout', 'broken', out, '--remote', nginx.url, '--fallback', 'good', '--store', freshStore(), '--json']);
      assert.equal(r2.code, 0, r2.stderr);
      assert.equal((json(r2).remoteRef as { name: string }).name, 'good');
      assert.deepEqual(describeTree(out), describeTree(other));
    } finally {
      await pushRef(src, nginx.url, 'broken'); // put the blob back for the other tests
    }
  });

  test('an action cache lookup answered 503 is retried', async () => {
    await pushRef(other, nginx.url, 'flaky');
    let failed = 0;
    const proxy: Proxy = await startProxy({
      upstream: nginx.url,
      fault: (method, path) => (method === 'GET' && path.includes('/ac/') && failed++ < 2 ? { status: 503 } : 'pass'),
    });
    try {
      const out = freshDir();
      const r = await runCli(['checkout', 'flaky', out, '--remote', proxy.url, '--store', freshStore(), '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(describeTree(out), describeTree(other));
      assert.deepEqual(proxy.requests.filter((q) => q.path.includes('/ac/')).map((q) => q.status), [503, 503, 200]);
      assert.equal((json(r).remote as { retried: number }).retried, 2);
    } finally {
      await proxy.close();
    }
  });

  describe('hostile entries are refused before anything is written', () => {
    const fileDigest = { hash: 'a'.repeat(64), size: 3 };
    const hostile: [string, () => Buffer, RegExp][] = [
      ['a Tree with a .. name', () => {
        const evil = encodeDirectory({ files: [{ name: '..', digest: fileDigest, executable: false }], directories: [], symlinks: [] });
        const root = encodeDirectory({ files: [], directories: [{ name: 'sub', digest: digestOf(evil) }], symlinks: [] });
        const tree = plantBlob(encodeTree(root, [evil]));
        return refEntry(digestOf(root), tree);
      }, /ERR_TREECAST_INVALID_TREE/],
      ['a Tree whose root is not the one the entry names', () => {
        const root = encodeDirectory({ files: [{ name: 'x', digest: fileDigest, executable: false }], directories: [], symlinks: [] });
        const tree = plantBlob(encodeTree(root, []));
        return refEntry({ hash: 'b'.repeat(64), size: 10 }, tree);
      }, /ERR_TREECAST_INVALID_TREE/],
      ['a Tree with a huge repeated field', () => {
        const root = encodeDirectory({ files: [{ name: 'x', digest: fileDigest, executable: false }], directories: [], symlinks: [] });
        const empty = Buffer.alloc(0);
        const tree = plantBlob(encodeTree(root, Array.from({ length: 1_000_001 }, () => empty)));
        return refEntry(digestOf(root), tree);
      }, /ERR_TREECAST_INVALID_TREE/],
      ['an ActionResult with a huge repeated field', () => {
        const one = refEntry({ hash: 'c'.repeat(64), size: 1 }, { hash: 'd'.repeat(64), size: 1 });
        return Buffer.concat(Array.from({ length: 100_001 }, () => one));
      }, /ERR_TREECAST_INVALID_ACTION_RESULT/],
      ['a truncated ActionResult', () => refEntry({ hash: 'c'.repeat(64), size: 1 }, { hash: 'd'.repeat(64), size: 1 }).subarray(0, 50), /ERR_TREECAST_INVALID_ACTION_RESULT/],
      ['an ActionResult that is not a ref (two output directories)', () => {
        const od = { path: 'x', treeDigest: { hash: 'd'.repeat(64), size: 1 }, topologicallySorted: false };
        return encodeActionResult({ outputFiles: [], outputDirectories: [od, od], exitCode: 0 });
      }, /ERR_TREECAST_INVALID_ACTION_RESULT/],
    ];
    for (const [what, make, code] of hostile) {
      test(what, async () => {
        const name = `hostile-${n++}`;
        plantEntry(name, make());
        const out = freshDir();
        const store = freshStore();
        const r = await runCli(['checkout', name, out, '--remote', nginx.url, '--store', store, '--json']);
        assert.equal(r.code, 6, r.stdout + r.stderr);
        assert.match(r.stdout, code);
        assert.ok(!fs.existsSync(out), 'nothing written to the target');
        // Nothing from the hostile tree entered the store either.
        assert.deepEqual(storeBlobs(store), []);
      });
    }
  });
});

/** Hashes of the file blobs (or of the Directory messages, root included) of a directory on disk. */
function lsHashes(dir: string, kind: 'file' | 'dir'): string[] {
  const store = freshStore();
  const root = execFileSync(process.execPath, [BIN, 'snapshot', dir, '--store', store], { encoding: 'utf8' }).trim().split('\n').pop()!;
  const out = execFileSync(process.execPath, [BIN, 'ls', root, '--store', store], { encoding: 'utf8' });
  const hashes = out.split('\n').filter((l) => l.includes(` ${kind} `) && !l.includes('/0\t')).map((l) => l.split(/\s+/)[2]!.split('/')[0]!);
  return kind === 'dir' ? [root.split('/')[0]!, ...hashes] : hashes;
}
/** Blob names in a store (none when it was never created). */
function storeBlobs(store: string): string[] {
  const cas = join(store, 'cas');
  if (!fs.existsSync(cas)) return [];
  return fs.readdirSync(cas).flatMap((s) => fs.readdirSync(join(cas, s)).filter((f) => !f.startsWith('.')));
}

describe("remote refs against treecast's own server", () => {
  let server: TestServer;
  before(async () => {
    server = await startServer(join(base, 'server-store'));
  });
  after(async () => {
    await server?.close();
  });

  test('push --ref, then checkout NAME on an empty store: batch endpoints, no /missing check after the validated entry, same tree', async () => {
    const pushed = await pushRef(src, server.url, 'deps-srv');
    // The server validated and kept the entry as it was sent.
    const [hash, size] = (pushed.root as string).split('/');
    const tree = ((pushed.ref as { tree: string }).tree).split('/');
    server.log.length = 0;
    const out = freshDir();
    const r = await runCli(['checkout', 'deps-srv', out, '--remote', server.url, '--store', freshStore(), '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(describeTree(out), describeTree(src));
    const j = json(r);
    assert.equal(j.digest, `${hash}/${size}`);
    assert.equal((j.remote as { batch: boolean }).batch, true);
    assert.equal((j.remoteRef as { tree: string }).tree, tree.join('/'));
    const paths = server.log.map((e) => `${e.method} ${e.path}`);
    assert.equal(paths.filter((p) => p.includes('/ac/')).length, 1);
    // The server answered the entry only because it holds every blob (AC validation, said in
    // /status): asking /missing again would check the same (the loose server below is asked).
    assert.ok(!paths.some((p) => p.includes('/treecast/v1/missing')), 'no second check of what the validated entry promised');
  });

  test('a name the validating server answered leaves the tree to the command: only the entry and /status are asked, then one /tree as for a digest', async () => {
    const pushed = await pushRef(src, server.url, 'deps-later');
    const root = parseDigest(pushed.root as string);
    const store = LocalStore.open(freshStore());
    server.log.length = 0;
    const { hit, fetcher } = await resolveRemoteRef(['deps-later'], () => new RemoteFetcher(store, { url: server.url }));
    try {
      assert.equal(hit.digest, pushed.root);
      assert.deepEqual(server.log.map((e) => `${e.method} ${e.path.replace(/[0-9a-f]{64}.*/, 'KEY')}`).sort(), ['GET /ac/KEY', 'GET /status']);
      // The checkout's threads boot while the tree arrives (checkout.ts), as they do for a digest.
      assert.equal(store.hasSync(root), false, 'no Directory message fetched before the command asks for the tree');
      const summary = await fetcher.pull(root);
      assert.equal(summary.files, new Set(lsHashes(src, 'file')).size);
    } finally {
      await fetcher.close();
    }
    const paths = server.log.map((e) => e.path);
    assert.equal(paths.filter((p) => p.includes('/treecast/v1/tree/')).length, 1, 'the tree fetched once');
    assert.ok(!paths.some((p) => p.includes('/treecast/v1/missing')), 'no second check of what the validated entry promised');
    const out = freshDir();
    const r = await runCli(['checkout', formatDigest(root), out, '--store', store.root]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(describeTree(out), describeTree(src));
  });

  test('checkout NAME --remote --direct writes each file once and stores no file blob; a remembered entry whose blob the server lost is a miss, nothing written', async () => {
    const many = join(base, 'many');
    makeTree(many, 40, 10, 5 << 20); // over 256 blobs (the entry is remembered), one file streamed apart
    await pushRef(many, server.url, 'direct-srv');
    const files = lsHashes(many, 'file');
    await new Promise((r) => setTimeout(r, 80)); // the server's shard folders settle (a clock tick)
    const remembered = server.server.status().acRemembered;
    for (let i = 0; i < 2; i++) {
      const out = freshDir();
      const store = freshStore();
      const r = await runCli(['checkout', 'direct-srv', out, '--remote', server.url, '--direct', '--store', store, '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(describeTree(out), describeTree(many));
      assert.equal((json(r).remoteRef as { name: string }).name, 'direct-srv');
      const stored = new Set(storeBlobs(store));
      assert.deepEqual(files.filter((h) => stored.has(h)), [], 'no file blob in the store');
    }
    assert.equal(server.server.status().acRemembered, remembered + 1, 'the second restore was answered from the remembered entry');
    fs.rmSync(server.store.blobPath(files[17]!));
    const out = freshDir();
    const miss = await runCli(['checkout', 'direct-srv', out, '--remote', server.url, '--direct', '--store', freshStore(), '--json']);
    assert.equal(miss.code, 3, miss.stderr);
    // The entry is there and a blob it reaches is not: that blob is named, not "no entry".
    assert.equal((json(miss).error as { code: string }).code, 'ERR_TREECAST_BLOB_NOT_FOUND');
    assert.equal((json(miss).error as { tried: { reason: string }[] }).tried[0]!.reason, 'incomplete');
    assert.ok(!fs.existsSync(out), 'nothing written for an incomplete tree');
  });

  test('--no-batch against the same server takes every Directory from the Tree message', async () => {
    await pushRef(other, server.url, 'plain-srv');
    server.log.length = 0;
    const out = freshDir();
    const r = await runCli(['checkout', 'plain-srv', out, '--remote', server.url, '--no-batch', '--store', freshStore(), '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(describeTree(out), describeTree(other));
    const dirs = new Set(lsHashes(other, 'dir'));
    const tree = ((json(r).remoteRef as { tree: string }).tree).split('/')[0]!;
    const gets = server.log.filter((e) => e.method === 'GET').map((e) => e.path.split('/').pop()!);
    assert.ok(gets.includes(tree));
    assert.deepEqual(gets.filter((h) => dirs.has(h)), [], 'no Directory fetched by itself');
  });

  test('an entry whose file blob the server lost is a miss naming the blob, with or without AC validation; --fallback hits the next', async () => {
    // With AC validation the server answers such an entry 404 to Bazel clients, but sends it to
    // treecast's (which asks with x-treecast-ac-unchecked); either way the client's /missing check
    // finds the blob gone.
    const loose = await startServer(join(base, 'loose-store'), { acValidation: false });
    try {
      for (const srv of [server, loose]) {
        const reason = 'incomplete';
        await pushRef(src, srv.url, 'srv-broken');
        await pushRef(other, srv.url, 'srv-good');
        const theirs = new Set(lsHashes(other, 'file'));
        const victim = lsHashes(src, 'file').find((h) => !theirs.has(h))!;
        fs.rmSync(srv.store.blobPath(victim));
        const out = freshDir();
        const miss = await runCli(['checkout', 'srv-broken', out, '--remote', srv.url, '--store', freshStore(), '--json']);
        assert.equal(miss.code, 3, miss.stderr);
        assert.equal((json(miss).error as { tried: { reason: string }[] }).tried[0]!.reason, reason);
        assert.ok(!fs.existsSync(out), 'nothing written for an incomplete tree');
        const store = freshStore();
        const r = await runCli(['pull', 'srv-broken', srv.url, '--fallback', 'srv-good', '--ref', 'restored', '--store', store, '--json']);
        assert.equal(r.code, 0, r.stderr);
        const j = json(r);
        assert.equal((j.remoteRef as { name: string; fallback: boolean }).name, 'srv-good');
        assert.equal((j.remoteRef as { missed: { reason: string }[] }).missed[0]!.reason, reason);
        assert.equal(formatDigest(LocalStore.open(store).readRef('restored')!), j.root);
        await pushRef(src, srv.url, 'srv-broken'); // whole again
      }
    } finally {
      await loose.close();
    }
  });
});

describe('push of a directory that shares its name with a local ref', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer(join(base, 'server-store-ambiguous'));
  });
  after(async () => {
    await server?.close();
  });

  test('the directory on disk is pushed (as pack takes it), not the older tree the ref names', async () => {
    const work = join(base, 'work');
    const store = join(base, 'store-ambiguous');
    fs.mkdirSync(join(work, 'node_modules'), { recursive: true });
    fs.writeFileSync(join(work, 'node_modules', 'pkg'), 'v1\n');
    // Run from `work`, so the name is a relative path (and a valid ref name); async, as the server
    // answers from this process.
    const cli = (...args: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((res) => {
        execFile(process.execPath, [BIN, ...args, '--store', store], { cwd: work, encoding: 'utf8' }, (e, stdout, stderr) =>
          res({ code: e ? ((e as { code?: number }).code ?? 1) : 0, stdout, stderr }),
        );
      });
    const old = await cli('snapshot', 'node_modules', '--ref', 'node_modules');
    assert.equal(old.code, 0, old.stderr);
    fs.writeFileSync(join(work, 'node_modules', 'pkg'), 'v2\n');
    const pushed = await cli('push', 'node_modules', server.url, '--ref', 'deps-new', '--json');
    assert.equal(pushed.code, 0, pushed.stderr);
    assert.notEqual(JSON.parse(pushed.stdout).root, old.stdout.trim().split('\n').pop(), 'not the ref');
    const out = freshDir();
    const restored = await runCli(['checkout', 'deps-new', out, '--remote', server.url, '--store', freshStore()]);
    assert.equal(restored.code, 0, restored.stderr);
    assert.equal(fs.readFileSync(join(out, 'pkg'), 'utf8'), 'v2\n');
    // A ref with no directory of that name is still pushed by name.
    const byRef = await cli('push', 'node_modules', server.url, '--json');
    assert.equal(byRef.code, 0, byRef.stderr);
    fs.rmSync(join(work, 'node_modules'), { recursive: true });
    const refOnly = await cli('push', 'node_modules', server.url, '--json');
    assert.equal(refOnly.code, 0, refOnly.stderr);
    assert.equal(JSON.parse(refOnly.stdout).root, old.stdout.trim().split('\n').pop());
  });
});
