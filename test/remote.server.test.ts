/** Bad input to the server: each case gets its status code and nothing is stored. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as http from 'node:http';
import * as crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { EMPTY_HASH, digestOf } from '../src/core/digest.js';
import { FrameDecoder, encodeDigestList, encodeFrame, decodeDigestList } from '../src/remote/wire.js';
import { leftoverTmp, removeDir, runCli, startServer, tempDir, type TestServer } from './helpers/remote.js';

const TOKEN = 'test-token-123';

/** Sends raw bytes, optionally waits, and returns what the server answered (status line parsed). */
function raw(url: string, chunks: (string | Buffer | number)[], opts: { halfClose?: boolean; timeoutMs?: number } = {}): Promise<{ status: number; text: string }> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const sock = net.connect(Number(u.port), u.hostname);
    let text = '';
    sock.on('data', (c) => (text += c.toString('latin1')));
    const done = () => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      resolve({ status: m ? Number(m[1]) : 0, text });
    };
    sock.on('close', done);
    sock.on('error', () => {});
    const t = setTimeout(() => sock.destroy(), opts.timeoutMs ?? 5_000);
    sock.on('close', () => clearTimeout(t));
    sock.on('connect', async () => {
      for (const c of chunks) {
        if (typeof c === 'number') await new Promise((r) => setTimeout(r, c));
        else sock.write(c);
      }
      if (opts.halfClose) sock.end();
    });
  });
}

function storedBlobs(root: string): string[] {
  const out: string[] = [];
  for (const s of fs.readdirSync(join(root, 'cas'))) for (const f of fs.readdirSync(join(root, 'cas', s))) if (!f.startsWith('.')) out.push(f);
  return out;
}

function tmpFiles(root: string): string[] {
  return leftoverTmp(root);
}

describe('remote server', () => {
  let dir: string;
  let srv: TestServer;
  let open: TestServer;
  const auth = { authorization: `Bearer ${TOKEN}` };

  before(async () => {
    dir = tempDir('server');
    srv = await startServer(join(dir, 'store'), { token: TOKEN, maxBlobBytes: 4096, maxBatchBytes: 8192, maxListRecords: 10, stallTimeoutMs: 300, headersTimeoutMs: 400 });
    open = await startServer(join(dir, 'open'), { batch: false, readOnly: true });
  });
  after(async () => {
    await srv?.close();
    await open?.close();
    removeDir(dir);
  });

  test('the empty blob always exists; a stored blob reads back, with or without an instance', async () => {
    let r = await fetch(`${srv.url}cas/${EMPTY_HASH}`, { headers: auth });
    assert.equal(r.status, 200);
    assert.equal((await r.arrayBuffer()).byteLength, 0);
    const body = Buffer.from('some blob');
    const d = digestOf(body);
    r = await fetch(`${srv.url}main/ci/cas/${d.hash}`, { method: 'PUT', headers: auth, body });
    assert.equal(r.status, 200);
    r = await fetch(`${srv.url}cas/${d.hash}`, { method: 'HEAD', headers: auth });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-length'), String(body.length));
    r = await fetch(`${srv.url}x/cas/${d.hash}`, { headers: auth });
    assert.deepEqual(Buffer.from(await r.arrayBuffer()), body);
    r = await fetch(`${srv.url}cas/${'0'.repeat(64)}`, { headers: auth });
    assert.equal(r.status, 404);
    await r.arrayBuffer();
    const status = (await (await fetch(`${srv.url}status`, { headers: auth })).json()) as Record<string, unknown>;
    for (const k of ['version', 'blobs', 'bytes', 'requests', 'inFlight', 'maxInFlight']) assert.ok(k in status, k);
    assert.equal(status.protocol, 'treecast-batch/1');
    assert.equal(status.blobs, 1);
    assert.equal(status.bytes, body.length);
  });

  test('a missing or wrong token is 401 and stores nothing', async () => {
    const body = Buffer.from('unauthorized');
    const d = digestOf(body);
    for (const headers of [{}, { authorization: 'Bearer nope' }, { authorization: `Basic ${TOKEN}` }] as Record<string, string>[]) {
      const r = await fetch(`${srv.url}cas/${d.hash}`, { method: 'PUT', headers, body });
      assert.equal(r.status, 401);
      assert.match(r.headers.get('www-authenticate') ?? '', /Bearer/);
      await r.arrayBuffer();
    }
    const r = await fetch(`${srv.url}status`);
    assert.equal(r.status, 401);
    await r.arrayBuffer();
    assert.ok(!storedBlobs(srv.store.root).includes(d.hash));
  });

  test('a body whose hash or size does not match is 400 and not stored', async () => {
    const body = Buffer.from('the real bytes');
    const wrong = digestOf(Buffer.from('other bytes'));
    const r = await fetch(`${srv.url}cas/${wrong.hash}`, { method: 'PUT', headers: auth, body });
    assert.equal(r.status, 400);
    assert.match(await r.text(), /refused/);
    assert.ok(!storedBlobs(srv.store.root).includes(wrong.hash));
    assert.ok(!storedBlobs(srv.store.root).includes(digestOf(body).hash));
    assert.deepEqual(tmpFiles(srv.store.root), []);
  });

  test('path traversal and malformed paths are 400', async () => {
    for (const p of ['/cas/../../etc/passwd', '/cas/..%2f..%2fetc%2fpasswd', `/%2e%2e/cas/${EMPTY_HASH}`, `/cas/${EMPTY_HASH.toUpperCase()}`, '/../../../etc/passwd', '/store/cas']) {
      const r = await raw(srv.url, [`GET ${p} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`]);
      assert.equal(r.status, 400, p);
    }
  });

  test('wrong methods are 405 with Allow; a read-only server refuses writes', async () => {
    let r = await fetch(`${srv.url}cas/${EMPTY_HASH}`, { method: 'DELETE', headers: auth });
    assert.equal(r.status, 405);
    assert.equal(r.headers.get('allow'), 'GET, HEAD, PUT');
    await r.arrayBuffer();
    const body = Buffer.from('read only');
    r = await fetch(`${open.url}cas/${digestOf(body).hash}`, { method: 'PUT', body });
    assert.equal(r.status, 405);
    await r.arrayBuffer();
    assert.deepEqual(storedBlobs(open.store.root), []);
    r = await fetch(`${open.url}treecast/v1/missing`, { method: 'POST', body: encodeDigestList([]) });
    assert.equal(r.status, 404, 'batch endpoints are off on this server');
    await r.arrayBuffer();
    const st = (await (await fetch(`${open.url}status`)).json()) as Record<string, unknown>;
    assert.equal(st.protocol, undefined);
  });

  test('oversized bodies are 413 and not stored', async () => {
    const big = Buffer.alloc(5000, 1);
    let r = await fetch(`${srv.url}cas/${digestOf(big).hash}`, { method: 'PUT', headers: auth, body: big });
    assert.equal(r.status, 413);
    await r.arrayBuffer();
    r = await fetch(`${srv.url}treecast/v1/missing`, { method: 'POST', headers: auth, body: Buffer.alloc(40 * 11) });
    assert.equal(r.status, 413);
    await r.arrayBuffer();
    const frames = Buffer.concat(Array.from({ length: 3 }, (_, i) => { const b = Buffer.alloc(3000, i); return encodeFrame(digestOf(b), b); }));
    r = await fetch(`${srv.url}treecast/v1/write`, { method: 'POST', headers: auth, body: frames });
    assert.equal(r.status, 413);
    await r.arrayBuffer();
    // Chunked, so the size is only found while reading.
    const chunked = await raw(srv.url, [
      `PUT /cas/${digestOf(big).hash} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n`,
      `${big.length.toString(16)}\r\n`, big, '\r\n0\r\n\r\n',
    ]);
    assert.equal(chunked.status, 413);
    assert.ok(!storedBlobs(srv.store.root).includes(digestOf(big).hash));
    assert.ok(!storedBlobs(srv.store.root).includes(digestOf(Buffer.alloc(3000, 2)).hash));
    assert.deepEqual(tmpFiles(srv.store.root), []);
  });

  test('a truncated body stores nothing', async () => {
    const body = Buffer.alloc(2000, 9);
    const d = digestOf(body);
    const r = await raw(srv.url, [`PUT /cas/${d.hash} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 2000\r\n\r\n`, body.subarray(0, 700)], { halfClose: true });
    assert.equal(r.status, 400, 'a body that ends early is a 400');
    await new Promise((res) => setTimeout(res, 50));
    const logged = srv.log.filter((e) => e.path === `/cas/${d.hash}`);
    assert.deepEqual(logged.map((e) => [e.status, e.aborted]), [[400, true]], 'logged as what happened');
    assert.ok(!storedBlobs(srv.store.root).includes(d.hash));
    assert.deepEqual(tmpFiles(srv.store.root), []);
  });

  test('a client that leaves mid-response is logged as 499, not as the 200 it began with', async () => {
    // Larger than loopback socket buffers, so the response cannot be complete when the client leaves.
    const big = Buffer.alloc(32 << 20, 7);
    const d = open.store.putSync(big);
    const u = new URL(open.url);
    await new Promise<void>((resolve) => {
      const sock = net.connect(Number(u.port), u.hostname);
      sock.on('connect', () => sock.write(`GET /cas/${d.hash} HTTP/1.1\r\nHost: x\r\n\r\n`));
      sock.once('data', () => sock.destroy());
      sock.on('close', () => resolve());
      sock.on('error', () => {});
    });
    let entry;
    for (let i = 0; i < 100 && !entry; i++) {
      await new Promise((res) => setTimeout(res, 20));
      entry = open.log.find((e) => e.path === `/cas/${d.hash}`);
    }
    assert.ok(entry, 'the request was logged');
    assert.equal(entry.status, 499);
    assert.equal(entry.aborted, true);
    assert.equal(entry.sent, undefined, 'the blob is not counted as sent');
    open.store.removeBlobSync(d.hash);
  });

  test('slow clients: stalled headers and stalled bodies get 408, nothing stored', async () => {
    const hdr = await raw(srv.url, ['GET /status HTTP/1.1\r\nHost: x\r\n', 1500]);
    assert.equal(hdr.status, 408);
    const body = Buffer.alloc(1000, 3);
    const d = digestOf(body);
    const r = await raw(srv.url, [`PUT /cas/${d.hash} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 1000\r\n\r\n`, body.subarray(0, 10), 1000]);
    assert.equal(r.status, 408);
    assert.ok(!storedBlobs(srv.store.root).includes(d.hash));
    assert.deepEqual(tmpFiles(srv.store.root), []);
  });

  test('batch endpoints: missing, write with a bad frame, read, tree', async () => {
    const a = Buffer.from('batch a');
    const b = Buffer.from('batch b');
    const bad = encodeFrame(digestOf(Buffer.from('claimed')), Buffer.from('xlaimed'));
    let r = await fetch(`${srv.url}treecast/v1/write`, { method: 'POST', headers: auth, body: Buffer.concat([encodeFrame(digestOf(a), a), bad, encodeFrame(digestOf(b), b)]) });
    assert.equal(r.status, 400);
    assert.match(await r.text(), /refused/);
    assert.ok(storedBlobs(srv.store.root).includes(digestOf(a).hash), 'the good frame before the bad one is kept');
    assert.ok(!storedBlobs(srv.store.root).includes(digestOf(Buffer.from('claimed')).hash));
    assert.ok(!storedBlobs(srv.store.root).includes(digestOf(b).hash));
    r = await fetch(`${srv.url}treecast/v1/missing`, { method: 'POST', headers: auth, body: encodeDigestList([digestOf(a), digestOf(b), { hash: digestOf(a).hash, size: 1 }]) });
    assert.deepEqual(decodeDigestList(Buffer.from(await r.arrayBuffer())).map((d) => d.size), [7, 1]);
    r = await fetch(`${srv.url}treecast/v1/read`, { method: 'POST', headers: auth, body: encodeDigestList([digestOf(a), digestOf(b)]) });
    const resp = Buffer.from(await r.arrayBuffer());
    assert.equal(resp.length, 41 + 7 + 41);
    assert.equal(resp[40], 0);
    assert.equal(resp.subarray(41, 48).toString(), 'batch a');
    assert.equal(resp[48 + 40], 1);
    r = await fetch(`${srv.url}treecast/v1/write`, { method: 'POST', headers: auth, body: Buffer.from('not frames') });
    assert.equal(r.status, 400);
    await r.arrayBuffer();
    assert.deepEqual(tmpFiles(srv.store.root), []);
  });

  test('a batch read sends each blob only when held with exactly the size asked, across runs of frames and a streamed one', async () => {
    const blobs = Array.from({ length: 40 }, (_, i) => Buffer.alloc(10_000 + i * 97, i + 1));
    const large = Buffer.alloc(300 << 10, 7); // above the small-read limit: streamed
    const srv = await startServer(join(dir, 'batch-read'));
    for (const b of [...blobs, large]) srv.store.putSync(b);
    const a = blobs[0]!;
    const wanted = [
      digestOf(a),
      { hash: digestOf(a).hash, size: a.length - 1 }, // the store's blob is longer
      { hash: digestOf(a).hash, size: a.length + 1 }, // the store's blob is shorter
      digestOf(Buffer.from('not on this server')),
      ...blobs.slice(1, 20).map((b) => digestOf(b)),
      digestOf(large),
      { hash: EMPTY_HASH, size: 0 },
      ...blobs.slice(20).map((b) => digestOf(b)),
    ];
    const expect = new Map<number, Buffer | undefined>([[0, a], [1, undefined], [2, undefined], [3, undefined]]);
    blobs.slice(1, 20).forEach((b, i) => expect.set(4 + i, b));
    expect.set(23, large);
    expect.set(24, Buffer.alloc(0));
    blobs.slice(20).forEach((b, i) => expect.set(25 + i, b));
    const r = await fetch(`${srv.url}treecast/v1/read`, { method: 'POST', body: encodeDigestList(wanted) });
    assert.equal(r.status, 200);
    const body = Buffer.from(await r.arrayBuffer());
    await srv.close();
    const got: { d: string; present: boolean; data: Buffer[] }[] = [];
    const dec = new FrameDecoder({
      header: (d, present) => got.push({ d: `${d.hash}/${d.size}`, present, data: [] }),
      data: (chunk) => got.at(-1)!.data.push(Buffer.from(chunk)),
      end: () => {},
    });
    dec.push(body);
    dec.finish();
    assert.equal(got.length, wanted.length);
    got.forEach((f, i) => {
      assert.equal(f.d, `${wanted[i]!.hash}/${wanted[i]!.size}`, `frame ${i} in order`);
      const want = expect.get(i);
      assert.equal(f.present, want !== undefined, `frame ${i} present`);
      if (want) assert.ok(Buffer.concat(f.data).equals(want), `frame ${i} data`);
    });
  });

  test('a batch read that the client drains slowly still sends every blob whole: a run buffer is filled again only once written', async () => {
    // Random bytes, so a buffer refilled while the socket still held it would send another blob's
    // bytes. Small blobs between ones near the small-read limit make runs of one small frame: a
    // write under the socket's high-water mark returns at once, still queued behind the full
    // socket, and the next run is read while it waits.
    const blobs = Array.from({ length: 160 }, (_, i) => crypto.randomBytes(i % 2 === 0 ? 6_000 + i : (250 << 10) - i));
    const srv = await startServer(join(dir, 'batch-slow'));
    try {
      for (const b of blobs) srv.store.putSync(b);
      const wanted = blobs.map((b) => digestOf(b));
      const got: Buffer[][] = [];
      const dec = new FrameDecoder({
        header: (_d, present) => {
          assert.ok(present);
          got.push([]);
        },
        data: (chunk) => got.at(-1)!.push(Buffer.from(chunk)),
        end: () => {},
      });
      await new Promise<void>((resolve, reject) => {
        const req = http.request(`${srv.url}treecast/v1/read`, { method: 'POST', agent: false }, (res) => {
          assert.equal(res.statusCode, 200);
          // Nothing read for a while: the server's writes fill the socket and wait for 'drain'
          // with several run buffers queued, then the rest is read in small steps.
          res.pause();
          setTimeout(() => {
            res.on('data', (c: Buffer) => {
              dec.push(c);
              res.pause();
              setImmediate(() => res.resume());
            });
            res.resume();
          }, 300);
          res.on('end', resolve);
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end(encodeDigestList(wanted));
      });
      dec.finish();
      assert.equal(got.length, blobs.length);
      got.forEach((parts, i) => assert.ok(Buffer.concat(parts).equals(blobs[i]!), `blob ${i} whole`));
    } finally {
      await srv.close();
    }
  });

  test('an upload above 64 KiB streams to a temp file while it arrives; a small one does too once the memory budget is spent', async () => {
    const s = await startServer(join(dir, 'budget'), { bufferBudgetBytes: 1000, stallTimeoutMs: 2_000 });
    try {
      const u = new URL(s.url);
      // Sends the headers and part of the body, then waits until told to finish (or stall).
      const partial = (body: Buffer, sent: number) => {
        const sock = net.connect(Number(u.port), u.hostname);
        sock.on('error', () => {});
        let text = '';
        sock.on('data', (c) => (text += c.toString('latin1')));
        sock.on('connect', () => sock.write(Buffer.concat([Buffer.from(`PUT /cas/${digestOf(body).hash} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n`), body.subarray(0, sent)])));
        return {
          finish: () => new Promise<string>((resolve) => {
            sock.on('close', () => resolve(text));
            sock.end(body.subarray(sent));
          }),
        };
      };
      const tmpBytes = async (want: number) => {
        for (let i = 0; i < 100; i++) {
          const total = tmpFiles(s.store.root).reduce((n, p) => n + fs.statSync(join(s.store.root, p)).size, 0);
          if (total >= want) return total;
          await new Promise((res) => setTimeout(res, 20));
        }
        return tmpFiles(s.store.root).reduce((n, p) => n + fs.statSync(join(s.store.root, p)).size, 0);
      };
      const large = Buffer.alloc(1 << 20, 4);
      const a = partial(large, 100_000);
      assert.equal(await tmpBytes(100_000), 100_000, 'the part received of a 1 MiB upload is on disk, not in memory');
      const small1 = Buffer.alloc(900, 1);
      const small2 = Buffer.alloc(900, 2);
      const b = partial(small1, 10);
      await new Promise((res) => setTimeout(res, 100));
      assert.equal(await tmpBytes(100_000), 100_000, 'a small upload within the budget is held in memory');
      const c = partial(small2, 10);
      assert.equal(await tmpBytes(100_010), 100_010, 'a small upload past the budget goes to a temp file');
      for (const p of [a, b, c]) assert.match(await p.finish(), /^HTTP\/1\.1 200/);
      for (const body of [large, small1, small2]) assert.deepEqual(s.store.readSync(digestOf(body)), body);
      assert.deepEqual(tmpFiles(s.store.root), []);
      // The budget was given back: a small upload is buffered again.
      const d = partial(Buffer.alloc(900, 3), 10);
      await new Promise((res) => setTimeout(res, 100));
      assert.deepEqual(tmpFiles(s.store.root), []);
      assert.match(await d.finish(), /^HTTP\/1\.1 200/);
    } finally {
      await s.close();
    }
  });

  test('past --max-connections a connection is answered 503 with Retry-After and closed; a freed slot serves again', async () => {
    const s = await startServer(join(dir, 'capped'), { maxConnections: 2 });
    const held: net.Socket[] = [];
    try {
      const u = new URL(s.url);
      for (let i = 0; i < 2; i++) {
        const sock = net.connect(Number(u.port), u.hostname);
        sock.on('error', () => {});
        await new Promise((res) => sock.on('connect', res));
        held.push(sock);
      }
      await new Promise((res) => setTimeout(res, 50));
      const refused = await raw(s.url, [`GET /status HTTP/1.1\r\nHost: x\r\n\r\n`]);
      assert.equal(refused.status, 503);
      assert.match(refused.text, /\r\nRetry-After: 1\r\n/i);
      assert.equal(s.server.status().refusedConnections, 1);
      assert.equal(s.server.status().maxConnectionsOpen, 2);
      assert.equal(s.log.filter((e) => e.refused).length, 1);
      held.pop()!.destroy();
      await new Promise((res) => setTimeout(res, 50));
      const served = await raw(s.url, [`GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`]);
      assert.equal(served.status, 200);
      assert.equal(s.server.status().refusedConnections, 1);
    } finally {
      for (const h of held) h.destroy();
      await s.close();
    }
  });

  test('a full disk is 507 and leaves nothing behind', async (t) => {
    if (process.platform !== 'linux' || process.getuid?.() !== 0) return t.skip('needs root to mount a small tmpfs (CI runs as root)');
    const mnt = join(dir, 'small');
    fs.mkdirSync(mnt);
    // As root a failed mount is a broken machine, not a reason to skip.
    const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt], { encoding: 'utf8' });
    assert.equal(mount.status, 0, `mount -t tmpfs failed as root: ${mount.stderr}`);
    let s: TestServer | undefined;
    try {
      s = await startServer(join(mnt, 'store'));
      const big = Buffer.alloc(3 << 20, 5);
      const r = await fetch(`${s.url}cas/${digestOf(big).hash}`, { method: 'PUT', body: big });
      assert.equal(r.status, 507);
      await r.arrayBuffer();
      assert.deepEqual(storedBlobs(s.store.root), []);
      assert.deepEqual(tmpFiles(s.store.root), []);
    } finally {
      await s?.close();
      spawnSync('umount', [mnt]);
    }
  });
});

test('a write to a --read-only server is a 405 saying so (body and header), and push names the URL and the server being read-only', async () => {
  const dir = tempDir('server-ro');
  const servers: TestServer[] = [];
  try {
    for (const batch of [true, false]) servers.push(await startServer(join(dir, `ro-${batch}`), { readOnly: true, batch }));
    const body = Buffer.from('refused bytes');
    const r = await fetch(`${servers[0]!.url}cas/${digestOf(body).hash}`, { method: 'PUT', body });
    assert.equal(r.status, 405);
    assert.equal(r.headers.get('allow'), 'GET, HEAD');
    assert.equal(r.headers.get('x-treecast-read-only'), '1');
    assert.match(await r.text(), /read-only \(started with --read-only\)/);
    fs.mkdirSync(join(dir, 'src'));
    fs.writeFileSync(join(dir, 'src', 'a'), 'push me');
    for (const srv of servers) {
      const p = await runCli(['push', join(dir, 'src'), srv.url], { TREECAST_STORE: join(dir, 'local') });
      assert.equal(p.code, 8, p.stderr);
      assert.match(p.stderr, /ERR_TREECAST_REMOTE/);
      assert.ok(p.stderr.includes(`to ${srv.url.replace(/\/$/, '')}`) || p.stderr.includes(`to ${srv.url}`), p.stderr);
      assert.match(p.stderr, /refused: the server is read-only \(HTTP 405\)/);
      assert.match(p.stderr, /hint: the server was started with --read-only/);
    }
  } finally {
    for (const s of servers) await s.close();
    removeDir(dir);
  }
});

test('a symlink planted in the served store is never followed: GET is 404, a batch read sends it as missing, /missing lists it', async () => {
  const dir = tempDir('server-link');
  const srv = await startServer(join(dir, 'store'));
  try {
    const small = Buffer.from('secret small bytes');
    const large = crypto.randomBytes(300 << 10); // streamed, not read whole
    for (const bytes of [small, large]) {
      const d = digestOf(bytes);
      // The target outside the store holds the very bytes: reading through the link would verify.
      const outside = join(dir, `outside-${d.size}`);
      fs.writeFileSync(outside, bytes);
      fs.mkdirSync(join(dir, 'store', 'cas', d.hash.slice(0, 2)), { recursive: true });
      fs.symlinkSync(outside, srv.store.blobPath(d.hash));
      const g = await fetch(`${srv.url}cas/${d.hash}`);
      assert.equal(g.status, 404, `GET of ${d.size} bytes`);
      await g.arrayBuffer();
      const r = await fetch(`${srv.url}treecast/v1/read`, { method: 'POST', body: encodeDigestList([d]) });
      assert.equal(r.status, 200);
      const frames: boolean[] = [];
      const dec = new FrameDecoder({ header: (_d, present) => frames.push(present), data: () => {}, end: () => {} });
      dec.push(Buffer.from(await r.arrayBuffer()));
      dec.finish();
      assert.deepEqual(frames, [false], `batch read of ${d.size} bytes sends a missing frame`);
      const m = await fetch(`${srv.url}treecast/v1/missing`, { method: 'POST', body: encodeDigestList([d]) });
      assert.equal(m.status, 200);
      assert.equal(decodeDigestList(Buffer.from(await m.arrayBuffer())).length, 1, 'listed as missing');
      assert.ok(fs.readFileSync(outside).equals(bytes), 'the target is untouched');
    }
  } finally {
    await srv.close();
    removeDir(dir);
  }
});

test('push never uploads through a symlink planted at a large blob in the local store (exit 5 naming it)', async () => {
  const dir = tempDir('push-link');
  const srv = await startServer(join(dir, 'remote'));
  try {
    const big = crypto.randomBytes((1 << 20) + 4096); // over 1 MiB: streamed from its file
    fs.mkdirSync(join(dir, 'src'));
    fs.writeFileSync(join(dir, 'src', 'big'), big);
    const env = { TREECAST_STORE: join(dir, 'local') };
    const snap = await runCli(['snapshot', join(dir, 'src')], env);
    assert.equal(snap.code, 0, snap.stderr);
    const tree = snap.stdout.trim().split('\n').pop()!;
    const d = digestOf(big);
    const blob = join(dir, 'local', 'cas', d.hash.slice(0, 2), d.hash);
    // The target outside the store holds the very bytes: the server's own check would accept them.
    fs.renameSync(blob, join(dir, 'outside'));
    fs.symlinkSync(join(dir, 'outside'), blob);
    const p = await runCli(['push', tree, srv.url], env);
    assert.equal(p.code, 5, p.stderr);
    assert.ok(p.stderr.includes(`${blob} is a symbolic link`), p.stderr);
    assert.equal(fs.existsSync(srv.store.blobPath(d.hash)), false, 'not uploaded');
  } finally {
    await srv.close();
    removeDir(dir);
  }
});
