/**
 * Push, pull and remote checkout against real peers: treecast's own server with and without its
 * batch endpoints, and nginx configured as Bazel documents a WebDAV cache. Round trips must be
 * identical, and a second push or pull must move nothing.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { formatDigest } from '../src/core/digest.js';
import { snapshot } from '../src/capture/snapshot.js';
import { LocalStore } from '../src/store/local.js';
import { HttpStore } from '../src/store/http.js';
import { TreeReader } from '../src/store/tree-reader.js';
import { describeTree, json, makeTree, removeDir, runCli, startServer, tempDir, type TestServer } from './helpers/remote.js';
import { useRemoteFixture } from './helpers/remote-fixture.js';
import { findNginx, startNginx, type Nginx } from './helpers/remote-nginx.js';

interface Peer {
  name: string;
  start(dir: string): Promise<{ url: string; stop(): Promise<void>; batch: boolean }>;
}

const nginxBin = findNginx();

const peers: Peer[] = [
  {
    name: 'treecast server (batch endpoints)',
    start: async (dir) => {
      const s: TestServer = await startServer(join(dir, 'server'));
      return { url: s.url, stop: () => s.close(), batch: true };
    },
  },
  {
    name: 'treecast server (plain Bazel protocol)',
    start: async (dir) => {
      const s = await startServer(join(dir, 'server'), { batch: false });
      return { url: `${s.url}some/instance/`, stop: () => s.close(), batch: false };
    },
  },
  {
    name: 'nginx WebDAV',
    start: async (dir) => {
      const n: Nginx = await startNginx(nginxBin!, join(dir, 'nginx'));
      return { url: n.url, stop: () => n.stop(), batch: false };
    },
  },
];

for (const peer of peers) {
  describe(`remote round trip: ${peer.name}`, { skip: peer.name.startsWith('nginx') && !nginxBin ? 'nginx is not installed (Debian: nginx-light)' : false }, () => {
    let dir: string;
    let remote: { url: string; stop(): Promise<void>; batch: boolean };
    let root: string;
    const src = () => join(dir, 'src');

    before(async () => {
      dir = tempDir('rt');
      makeTree(src(), 25, 12, 3 << 20);
      remote = await peer.start(dir);
    });
    after(async () => {
      await remote?.stop();
      removeDir(dir);
    });

    test('push a directory sends every blob once; a second push sends none', async () => {
      const r = await runCli(['push', src(), remote.url, '--store', join(dir, 'a'), '--json', '--concurrency', '8']);
      assert.equal(r.code, 0, r.stderr);
      const j = json(r);
      root = j.root as string;
      assert.equal(j.batch, remote.batch);
      assert.equal(j.present, 0);
      assert.equal(j.uploaded, j.blobs);
      assert.ok((j.blobs as number) > 25 * 12 * 0.8);
      const again = json(await runCli(['push', root, remote.url, '--store', join(dir, 'a'), '--json']));
      assert.equal(again.uploaded, 0);
      assert.equal(again.present, j.blobs);
    });

    test('pull fetches the whole tree, verified; a second pull fetches nothing', async () => {
      const r = await runCli(['pull', root, remote.url, '--store', join(dir, 'b'), '--ref', 'pulled/tree', '--json']);
      assert.equal(r.code, 0, r.stderr);
      const j = json(r);
      assert.equal(j.skipped, 0);
      assert.ok((j.fetched as number) > 0);
      const b = LocalStore.open(join(dir, 'b'));
      assert.equal(formatDigest(b.resolve('pulled/tree')), root);
      // Every blob of the tree is now local and reads back verified.
      const reader = new TreeReader(b);
      for await (const e of reader.walk(b.resolve(root))) if (e.type === 'file') b.readSync(e.digest);
      const again = json(await runCli(['pull', root, remote.url, '--store', join(dir, 'b'), '--json']));
      assert.equal(again.fetched, 0);
      assert.equal(again.skipped, (j.fetched as number));
    });

    test('checkout --remote into an empty store reproduces the tree exactly', async () => {
      const out = join(dir, 'out');
      const r = await runCli(['checkout', root, out, '--remote', remote.url, '--store', join(dir, 'c'), '--json', '--concurrency', '4']);
      assert.equal(r.code, 0, r.stderr);
      const j = json(r);
      assert.ok(((j.remote as Record<string, number>).fetched) > 0);
      assert.deepEqual(describeTree(out), describeTree(src()));
    });

    test('HttpStore reads and writes single blobs', async () => {
      const s = new HttpStore({ url: remote.url });
      try {
        const d = await s.put(Buffer.from('via HttpStore'));
        assert.equal(await s.has(d), true);
        assert.equal((await s.get(d)).toString(), 'via HttpStore');
        assert.equal(await s.has({ hash: 'f'.repeat(64), size: 3 }), false);
        await assert.rejects(s.get({ hash: 'f'.repeat(64), size: 3 }), { code: 'ERR_TREECAST_BLOB_NOT_FOUND' });
      } finally {
        await s.close();
      }
    });
  });
}

describe('push from the library snapshot and a token-protected server', () => {
  let dir: string;
  let s: TestServer;
  useRemoteFixture('tok', { server: { token: 'tok-abc' } }, (f) => ({ dir, server: s } = f));

  test('tokens from --token-file or TREECAST_TOKEN are sent; a wrong one fails with exit 8 and is never printed', async () => {
    makeTree(join(dir, 'src'), 3, 3);
    const store = LocalStore.open(join(dir, 'a'));
    const root = formatDigest((await snapshot(join(dir, 'src'), { store })).digest);
    fs.writeFileSync(join(dir, 'tokfile'), 'tok-abc\n');
    let r = await runCli(['push', root, s.url, '--store', join(dir, 'a'), '--token-file', join(dir, 'tokfile'), '--json']);
    assert.equal(r.code, 0, r.stderr);
    r = await runCli(['pull', root, s.url, '--store', join(dir, 'b'), '--json'], { TREECAST_TOKEN: 'tok-abc' });
    assert.equal(r.code, 0, r.stderr);
    r = await runCli(['pull', root, s.url, '--store', join(dir, 'c'), '--token', 'wrong-secret-value']);
    assert.equal(r.code, 8);
    assert.match(r.stderr, /401/);
    assert.doesNotMatch(r.stdout + r.stderr, /wrong-secret-value|tok-abc/);
  });
});
