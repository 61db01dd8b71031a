/**
 * GET /treecast/v1/tree over real HTTP: what `treecast serve` sends (every Directory once,
 * breadth first, root first; a directory it lacks as a 'missing' frame with nothing below), that
 * pull uses it (walking the bytes it received, not reading them back), and that a hostile
 * server's /tree (a Directory naming '..') is refused by `checkout --remote` before anything is
 * written.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { type Digest, digestOf, formatDigest } from '../src/core/digest.js';
import { decodeDirectory, directoryBlob } from '../src/core/reapi.js';
import { snapshot } from '../src/capture/snapshot.js';
import { LocalStore } from '../src/store/local.js';
import { RemoteFetcher } from '../src/remote/fetch.js';
import { BATCH_PROTOCOL, FRAME_PRESENT, FrameDecoder, encodeFrame, encodeFrameHeader } from '../src/remote/wire.js';
import { describeTree, runCli, startServer, type TestServer } from './helpers/remote.js';
import { useRemoteFixture } from './helpers/remote-fixture.js';
import { startProxy } from './helpers/remote-proxy.js';

/** Parses a frame stream into [digest, bytes | undefined (missing)] in order. */
function frames(body: Buffer): [Digest, Buffer | undefined][] {
  const out: [Digest, Buffer | undefined][] = [];
  let parts: Buffer[] | undefined;
  const dec = new FrameDecoder({
    header: (_d, present) => (parts = present ? [] : undefined),
    data: (c) => parts!.push(Buffer.from(c)),
    end: (d) => out.push([d, parts && Buffer.concat(parts)]),
  });
  dec.push(body);
  dec.finish();
  return out;
}

/** Breadth-first Directory digests of a tree held in `store`, each once. */
function breadthFirst(store: LocalStore, root: Digest): string[] {
  const seen = new Set([root.hash]);
  const order: string[] = [];
  let level = [root];
  while (level.length > 0) {
    const next: Digest[] = [];
    for (const d of level) {
      order.push(d.hash);
      for (const c of decodeDirectory(store.readSync(d)).directories) if (!seen.has(c.digest.hash)) (seen.add(c.digest.hash), next.push(c.digest));
    }
    level = next;
  }
  return order;
}

describe('/tree over HTTP', () => {
  let dir: string;
  let srv: TestServer;
  let root: Digest;

  // Two identical subdirectories: one Directory message, which /tree must send once.
  const twins = (src: string) => {
    for (const twin of ['twin-a/inner', 'twin-b/inner']) {
      fs.mkdirSync(join(src, twin), { recursive: true });
      fs.writeFileSync(join(src, twin, 'same.txt'), 'same\n');
    }
  };
  useRemoteFixture('tree', { tree: { dirs: 12, files: 3, more: twins } }, (f) => ({ dir, server: srv, rootDigest: root } = f));

  test('serve sends every Directory once, breadth first from the root, verifiable by hash', async () => {
    const r = await fetch(`${srv.url}ci/treecast/v1/tree/${root.hash}/${root.size}`);
    assert.equal(r.status, 200);
    const got = frames(Buffer.from(await r.arrayBuffer()));
    assert.deepEqual(got.map(([d]) => d.hash), breadthFirst(srv.store, root));
    for (const [d, bytes] of got) {
      assert.ok(bytes, `${formatDigest(d)} present`);
      assert.equal(digestOf(bytes).hash, d.hash);
    }
    assert.ok(got.length > 12, 'nested directories are included');
  });

  test("serve answers /tree from the root's tree pack, reading no message from the store; a damaged pack is not used", async () => {
    const url = `${srv.url}treecast/v1/tree/${root.hash}/${root.size}`;
    const pack = join(srv.store.root, 'trees', root.hash);
    assert.ok(fs.existsSync(pack), 'the snapshot left a tree pack');
    const order = breadthFirst(srv.store, root);
    const reads: string[] = [];
    const readSync = srv.store.readSync;
    srv.store.readSync = (d: Digest) => {
      reads.push(d.hash);
      return readSync.call(srv.store, d);
    };
    const saved = fs.readFileSync(pack);
    try {
      const fromPack = Buffer.from(await (await fetch(url)).arrayBuffer());
      assert.deepEqual(reads, [], 'no message read from the store');
      // A pack whose checksum fails is ignored: the same answer, every message read from the store.
      const damaged = Buffer.from(saved);
      damaged[damaged.length - 1]! ^= 1;
      fs.writeFileSync(pack, damaged);
      const fromBlobs = Buffer.from(await (await fetch(url)).arrayBuffer());
      assert.deepEqual(reads, order);
      assert.ok(fromPack.equals(fromBlobs), 'the same frames either way');
      for (const [d, bytes] of frames(fromPack)) assert.equal(digestOf(bytes!).hash, d.hash);
    } finally {
      srv.store.readSync = readSync;
      fs.writeFileSync(pack, saved);
    }
  });

  test('a directory the server lacks is a missing frame, and nothing below it is sent', async () => {
    const s2 = await startServer(join(dir, 'partial'));
    try {
      await snapshot(join(dir, 'src'), { store: s2.store });
      // Remove one directory that has subdirectories: it and its subtree vanish from the response.
      const dirs = new Map<string, Digest[]>();
      const walk = (d: Digest) => {
        const kids = decodeDirectory(s2.store.readSync(d)).directories.map((n) => n.digest);
        dirs.set(d.hash, kids);
        kids.forEach(walk);
      };
      walk(root);
      const [withKids, kidDigests] = [...dirs].find(([h, k]) => h !== root.hash && k.length > 0)!;
      const kids = kidDigests.map((k) => k.hash);
      s2.store.removeBlobSync(withKids);
      const got = frames(Buffer.from(await (await fetch(`${s2.url}treecast/v1/tree/${root.hash}/${root.size}`)).arrayBuffer()));
      const missing = got.filter(([, b]) => b === undefined).map(([d]) => d.hash);
      assert.deepEqual(missing, [withKids]);
      for (const k of kids) assert.ok(!got.some(([d]) => d.hash === k), 'nothing below a missing directory');
    } finally {
      await s2.close();
    }
  });

  test('pull fetches the directories with one /tree request', async () => {
    const before = srv.log.length;
    const r = await runCli(['pull', formatDigest(root), srv.url, '--store', join(dir, 'client')]);
    assert.equal(r.code, 0, r.stderr);
    const requests = srv.log.slice(before);
    assert.equal(requests.filter((e) => e.path.includes('/treecast/v1/tree/')).length, 1);
    assert.ok(!requests.some((e) => e.path.startsWith('/cas/') && breadthFirst(srv.store, root).includes(e.path.slice(5))), 'no Directory fetched one by one');
  });

  test('pull walks the Directory messages /tree sent from the bytes it received and verified, reading none back', async () => {
    const store = LocalStore.open(join(dir, 'client-walk'));
    const dirs = new Set(breadthFirst(srv.store, root));
    const readBack: string[] = [];
    const readSync = store.readSync.bind(store);
    store.readSync = (d: Digest) => {
      if (dirs.has(d.hash)) readBack.push(d.hash);
      return readSync(d);
    };
    const fetcher = new RemoteFetcher(store, { url: srv.url });
    try {
      const s = await fetcher.pull(root);
      assert.equal(s.directories, dirs.size);
    } finally {
      await fetcher.close();
    }
    assert.deepEqual(readBack, [], 'no Directory message read back from the store');
    // What the walk found from those bytes is the tree: every message and blob is in the store,
    // and a checkout from the store alone (through the pack the pull wrote) gives the source back.
    const out = join(dir, 'walk-out');
    const r = await runCli(['checkout', formatDigest(root), out, '--store', store.root]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')));
  });

  test('the /tree request goes out beside the /status question, not after its answer', async () => {
    // /status is held back 600 ms: a /tree request that waited for its answer would arrive after.
    let statusAt = 0;
    let treeAt = 0;
    const proxy = await startProxy({
      upstream: srv.url,
      delay: (method, path) => {
        if (path.endsWith('/status')) {
          statusAt = Date.now();
          return 600;
        }
        if (path.includes('/treecast/v1/tree/')) treeAt = Date.now();
        return 0;
      },
    });
    try {
      const r = await runCli(['pull', formatDigest(root), proxy.url, '--store', join(dir, 'client-early')]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(statusAt > 0 && treeAt > 0 && treeAt - statusAt < 500, `the /tree request arrived ${treeAt - statusAt} ms after /status`);
      assert.equal(proxy.requests.filter((q) => q.path.includes('/treecast/v1/tree/')).length, 1);
    } finally {
      await proxy.close();
    }
  });

  test('a server without batch endpoints answers the early /tree with 404 and the pull goes on level by level; --no-batch sends none', async () => {
    const plain = await startServer(join(dir, 'server'), { batch: false });
    try {
      for (const noBatch of [false, true]) {
        const before = plain.log.length;
        const store = join(dir, `client-plain-${noBatch}`);
        const r = await runCli(['pull', formatDigest(root), plain.url, '--store', store, ...(noBatch ? ['--no-batch'] : [])]);
        assert.equal(r.code, 0, r.stderr);
        const trees = plain.log.slice(before).filter((e) => e.path.includes('/treecast/v1/tree/'));
        assert.deepEqual(trees.map((e) => e.status), noBatch ? [] : [404]);
        assert.deepEqual(breadthFirst(LocalStore.open(store), root), breadthFirst(srv.store, root));
      }
    } finally {
      await plain.close();
    }
  });

  for (const where of ['root', 'subdirectory'] as const) {
    test(`a hostile /tree (a Directory naming '..' in the ${where}) is refused before anything is written`, async () => {
      const payload = Buffer.from('planted\n');
      const evil = directoryBlob({ files: [{ name: '..', digest: digestOf(payload), executable: false }], directories: [], symlinks: [] });
      const top =
        where === 'root'
          ? directoryBlob({ files: [], directories: [{ name: '..', digest: evil.digest }], symlinks: [] })
          : directoryBlob({ files: [], directories: [{ name: 'sub', digest: evil.digest }], symlinks: [] });
      const requests: string[] = [];
      const hostile = http.createServer((req, res) => {
        requests.push(`${req.method} ${req.url}`);
        if (req.url === '/status') {
          res.writeHead(200, { 'content-type': 'application/json' });
          return res.end(JSON.stringify({ version: 'x', protocol: BATCH_PROTOCOL, readOnly: true }));
        }
        if (req.url?.startsWith('/treecast/v1/tree/')) {
          res.writeHead(200, { 'content-type': 'application/octet-stream' });
          return res.end(Buffer.concat([encodeFrame(top.digest, top.bytes), encodeFrame(evil.digest, evil.bytes)]));
        }
        if (req.url === `/cas/${digestOf(payload).hash}`) return res.end(payload);
        if (req.url === `/cas/${top.digest.hash}`) return res.end(top.bytes);
        if (req.url === `/cas/${evil.digest.hash}`) return res.end(evil.bytes);
        if (req.url === '/treecast/v1/read') {
          // Whatever is asked for is sent, from the hostile set.
          const chunks: Buffer[] = [];
          req.on('data', (c) => chunks.push(c));
          req.on('end', () => {
            res.writeHead(200);
            res.end(Buffer.concat([encodeFrameHeader(evil.digest, FRAME_PRESENT), evil.bytes]));
          });
          return;
        }
        res.writeHead(404);
        res.end();
      });
      hostile.listen(0, '127.0.0.1');
      await new Promise((r) => hostile.once('listening', r));
      const url = `http://127.0.0.1:${(hostile.address() as AddressInfo).port}/`;
      const base = join(dir, `hostile-${where}`);
      fs.mkdirSync(base);
      const target = join(base, 'out');
      try {
        const r = await runCli(['checkout', formatDigest(top.digest), target, '--remote', url, '--store', join(base, 'store'), '--json']);
        assert.equal(r.code, 6, `exit 6 (unsafe input), got ${r.code}: ${r.stderr}`);
        assert.match(r.stdout + r.stderr, /'\.\.'|\.\./);
        assert.ok(requests.some((q) => q.startsWith('GET /treecast/v1/tree/')), `the client read /tree: ${requests.join(', ')}`);
        assert.ok(!fs.existsSync(target) || fs.readdirSync(target).length === 0, 'nothing written into the target');
        assert.deepEqual(fs.readdirSync(base).sort(), ['out', 'store'].filter((n) => fs.existsSync(join(base, n))), 'nothing written beside it');
        assert.ok(!requests.includes(`GET /cas/${digestOf(payload).hash}`), 'no file blob was fetched for the hostile tree');
      } finally {
        hostile.closeAllConnections();
        await new Promise((r) => hostile.close(r));
      }
    });
  }
});
