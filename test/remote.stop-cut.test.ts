/**
 * A stop must not hang on a stalled remote. The first SIGINT lets requests in flight complete; a
 * second one, while that stop is under way, cuts them at once. Each test runs a real treecast
 * process against a small HTTP server that passes the first few requests carrying blobs to a real
 * treecast server and then stalls on purpose: a download gets its headers and half its body, then
 * nothing; an upload has half its body passed on to the server, and never an answer.
 *
 * For pull, `checkout --remote` (batch reads, `--direct`, a plain cache), a ref looked up by name
 * and push: exit 130 within a bound well below undici's timeouts (30 s with no body byte, 60 s to
 * the headers), nothing half written in the target, every blob of the store verifying, and the
 * same command against the healthy server completing the job.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describeTree, removeDir, leftoverTmp, runCli, startCli, startServer, waitExit, type TestServer } from './helpers/remote.js';
import { useRemoteFixture } from './helpers/remote-fixture.js';
import { RemoteClient } from '../src/remote/client.js';
import { InterruptedError } from '../src/errors.js';

/** How long the command may take to exit after the second signal: well below the HTTP timeouts. */
const EXIT_BOUND_MS = 5_000;
/** Given up on (the child killed) after this: a stop that waits for the timeouts fails here. */
const GIVE_UP_MS = 15_000;

interface StallServer {
  url: string;
  /** Requests held (stalled on purpose). */
  held: number;
  /** Held requests whose connection the client closed. */
  closedByClient: number;
  close(): Promise<void>;
}

/** Requests that carry blobs (or a ref's entry, with `refs`). */
function carriesBlobs(path: string, refs: boolean): boolean {
  return /\/cas\/[0-9a-f]{64}$/.test(path) || /\/treecast\/v1\/(read|write)$/.test(path) || (refs && /\/ac\/[0-9a-f]{64}$/.test(path));
}

/**
 * A node:http server in front of `upstream` that passes everything but the requests carrying
 * blobs after the first `passFirst` of them: those it holds, after half their bytes.
 */
async function startStallServer(upstream: string, passFirst: number, refs = false): Promise<StallServer> {
  const up = new URL(upstream);
  const agent = new http.Agent({ keepAlive: false });
  let carrying = 0;
  const state: StallServer = {
    url: '',
    held: 0,
    closedByClient: 0,
    close: async () => {
      server.closeAllConnections();
      server.close();
      agent.destroy();
    },
  };
  const server = http.createServer((req, res) => {
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    const preq = http.request({ host: up.hostname, port: up.port, method, path, headers: { ...req.headers, host: up.host }, agent });
    preq.on('error', () => res.destroy());
    // A request the client cuts is cut on the way to the server too, as a real one would be.
    res.on('close', () => {
      if (!res.writableFinished) preq.destroy();
    });
    const hold = carriesBlobs(path, refs) && carrying++ >= passFirst;
    if (!hold) {
      req.pipe(preq);
      preq.on('response', (pres) => {
        res.writeHead(pres.statusCode ?? 502, pres.headers);
        pres.pipe(res);
      });
      return;
    }
    state.held++;
    res.on('close', () => {
      if (!res.writableFinished) state.closedByClient++;
    });
    if (method === 'PUT' || path.endsWith('/write')) {
      // Half the body is passed on, the rest read and dropped, and no answer comes: a stalled
      // upload. (Not reading the rest would stall it too, but a paused socket would not see the
      // client close it, so the server's half would wait for its own stall timeout.)
      const half = Math.floor(Number(req.headers['content-length'] ?? 0) / 2);
      let passed = 0;
      req.on('data', (c: Buffer) => {
        if (passed >= half) return;
        const part = c.subarray(0, half - passed);
        preq.write(part);
        passed += part.length;
      });
      return;
    }
    // A download: its headers and half its body, then nothing.
    req.pipe(preq);
    preq.on('response', (pres) => {
      res.writeHead(pres.statusCode ?? 502, pres.headers);
      res.flushHeaders();
      const total = Number(pres.headers['content-length']);
      let half: number | undefined;
      let sent = 0;
      pres.on('data', (c: Buffer) => {
        half ??= Number.isFinite(total) ? Math.floor(total / 2) : Math.floor(c.length / 2);
        if (sent < half) {
          const part = c.subarray(0, half - sent);
          res.write(part);
          sent += part.length;
        }
        if (sent >= half) pres.pause();
      });
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}${up.pathname}`;
  return state;
}

type Child = ReturnType<typeof startCli>;
const children: Child[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/**
 * Runs `args` until `stall` holds a request, sends SIGINT, waits for the stop to be under way
 * (its line on stderr) and held by the stall, sends SIGINT again, asserts that the command ended
 * by itself with exit 130 soon after, having cut the held requests, and returns how it ended and
 * how long after the second signal.
 */
async function stopTwice(args: string[], stall: StallServer): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; ms: number }> {
  const child = startCli(args);
  children.push(child);
  const exited = waitExit(child);
  const running = () => child.exitCode === null && child.signalCode === null;
  const until = async (done: () => boolean, what: string, ms = 60_000) => {
    const deadline = Date.now() + ms;
    while (!done() && running() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.ok(done(), `${what} (exit ${child.exitCode ?? child.signalCode}): ${child.out.stderr}`);
  };
  await until(() => stall.held > 0, 'a request is held by the stalling server');
  child.kill('SIGINT');
  await until(() => child.out.stderr.includes('SIGINT received, stopping'), 'the first signal started the stop');
  // The stop waits for the stalled request: the second signal provably comes while it runs.
  await new Promise((r) => setTimeout(r, 500));
  assert.ok(running(), `the stop is held by the stalled request: ${child.out.stderr}`);
  child.kill('SIGINT');
  const t0 = Date.now();
  const killer = setTimeout(() => child.kill('SIGKILL'), GIVE_UP_MS);
  let r: { code: number | null; signal: NodeJS.Signals | null; stderr: string; ms: number };
  try {
    const e = await exited;
    r = { code: e.code, signal: e.signal, stderr: e.stderr, ms: Date.now() - t0 };
  } finally {
    clearTimeout(killer);
  }
  assert.equal(r.signal, null, `ended by itself, not killed after ${GIVE_UP_MS} ms: ${r.stderr}`);
  assert.equal(r.code, 130, r.stderr);
  assert.ok(r.ms < EXIT_BOUND_MS, `exited ${r.ms} ms after the second signal (bound ${EXIT_BOUND_MS} ms)`);
  assert.match(r.stderr, /received again; already stopping, requests still in flight are cut now/, r.stderr);
  assert.match(r.stderr, /ERR_TREECAST_INTERRUPTED/, r.stderr);
  assert.ok(stall.closedByClient > 0, 'the client closed the held requests');
  return r;
}

/** Every file in `out` holds exactly its source's bytes; no temporary file was left. Returns how many. */
function assertNothingHalfWritten(out: string, src: string): number {
  if (!fs.existsSync(out)) return 0;
  let whole = 0;
  for (const rel of fs.readdirSync(out, { recursive: true }) as string[]) {
    const p = join(out, rel);
    const st = fs.lstatSync(p);
    if (!st.isFile()) continue;
    assert.doesNotMatch(rel, /\.treecast-.*\.tmp$/, `temporary file ${rel} left`);
    assert.deepEqual(fs.readFileSync(p), fs.readFileSync(join(src, rel)), `${rel} is whole`);
    whole++;
  }
  return whole;
}

async function assertStoreSound(store: string): Promise<void> {
  const v = await runCli(['verify', '--store', store]);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  assert.deepEqual(leftoverTmp(store), [], 'no temporary blob left in the store');
}

describe('a second signal cuts requests stalled on the remote', () => {
  let dir: string;
  let src: string;
  let root: string;
  let serverStore: string;
  let server: TestServer;

  useRemoteFixture('stop-cut', { tree: { dirs: 30, files: 20, bigBytes: 5 << 20 } }, (f) => {
    ({ dir, src, root, serverStore, server } = f);
  });

  // passFirst: requests carrying blobs that pass before the stall (a plain cache's are one blob each).
  const checkouts: { name: string; flags: string[]; passFirst: number }[] = [
    { name: 'checkout --remote (batch reads)', flags: [], passFirst: 3 },
    { name: 'checkout --remote --direct', flags: ['--direct'], passFirst: 3 },
    { name: 'checkout --remote from a plain cache', flags: ['--no-batch'], passFirst: 300 },
  ];
  for (const [i, c] of checkouts.entries()) {
    test(`${c.name}: exit 130 at once, nothing half written, the rerun completes`, async (t) => {
      const stall = await startStallServer(server.url, c.passFirst);
      const store = join(dir, `co-store-${i}`);
      const out = join(dir, `co-out-${i}`);
      try {
        const args = (url: string) => ['checkout', root, out, '--remote', url, '--store', store, '--jobs', '2', '--concurrency', '4', ...c.flags];
        const r = await stopTwice(args(stall.url), stall);
        t.diagnostic(`exit ${r.code} ${r.ms} ms after the second signal; ${assertNothingHalfWritten(out, src)} whole files written`);
        await assertStoreSound(store);
        const st = await runCli(['status', out, '--store', store]);
        assert.equal(st.code, 7, `status names the checkout that did not finish: ${st.stderr}`);
        const again = await runCli(args(server.url));
        assert.equal(again.code, 0, again.stderr);
        assert.deepEqual(describeTree(out), describeTree(src));
        await assertStoreSound(store);
      } finally {
        await stall.close();
        removeDir(store);
        removeDir(out);
      }
    });
  }

  test('pull: exit 130 at once, every stored blob verifies, the rerun completes', async (t) => {
    const stall = await startStallServer(server.url, 3);
    const store = join(dir, 'pull-store');
    const out = join(dir, 'pull-out');
    try {
      const args = (url: string) => ['pull', root, url, '--store', store, '--concurrency', '4'];
      const r = await stopTwice(args(stall.url), stall);
      t.diagnostic(`exit ${r.code} ${r.ms} ms after the second signal`);
      await assertStoreSound(store);
      const again = await runCli(args(server.url));
      assert.equal(again.code, 0, again.stderr);
      await assertStoreSound(store);
      const co = await runCli(['checkout', root, out, '--store', store]);
      assert.equal(co.code, 0, co.stderr);
      assert.deepEqual(describeTree(out), describeTree(src));
    } finally {
      await stall.close();
      removeDir(store);
      removeDir(out);
    }
  });

  test('checkout NAME --remote whose ref lookup stalls: exit 130 at once, nothing written, the rerun completes', async (t) => {
    const named = await runCli(['push', root, server.url, '--store', serverStore, '--ref', 'stalled-name']);
    assert.equal(named.code, 0, named.stderr);
    const stall = await startStallServer(server.url, 0, true);
    const store = join(dir, 'ref-store');
    const out = join(dir, 'ref-out');
    try {
      const args = (url: string) => ['checkout', 'stalled-name', out, '--remote', url, '--store', store];
      const r = await stopTwice(args(stall.url), stall);
      t.diagnostic(`exit ${r.code} ${r.ms} ms after the second signal`);
      assert.equal(assertNothingHalfWritten(out, src), 0, 'nothing written before the tree was known');
      await assertStoreSound(store);
      const again = await runCli(args(server.url));
      assert.equal(again.code, 0, again.stderr);
      assert.deepEqual(describeTree(out), describeTree(src));
    } finally {
      await stall.close();
      removeDir(store);
      removeDir(out);
    }
  });

  describe('push', () => {
    let target: TestServer;
    let targetStore: string;
    before(async () => {
      targetStore = join(dir, 'push-target');
      target = await startServer(targetStore);
    });
    after(async () => {
      await target?.close();
    });

    test('push: exit 130 at once, the server keeps no partial blob, the rerun completes', async (t) => {
      const stall = await startStallServer(target.url, 2);
      const out = join(dir, 'push-out');
      const pulled = join(dir, 'push-pulled');
      try {
        const args = (url: string) => ['push', root, url, '--store', serverStore, '--concurrency', '4'];
        const r = await stopTwice(args(stall.url), stall);
        t.diagnostic(`exit ${r.code} ${r.ms} ms after the second signal`);
        // The server got uploads cut short: none of them is stored, partly or under its name, and
        // each one's temporary file goes once the server sees its connection close.
        const cutShort = () => target.log.filter((e) => e.aborted && (e.method === 'PUT' || e.path.endsWith('/write'))).length;
        for (const until = Date.now() + 5_000; (cutShort() === 0 || leftoverTmp(targetStore).length > 0) && Date.now() < until; ) await new Promise((res) => setTimeout(res, 20));
        assert.ok(cutShort() > 0, 'the server received part of an upload before the cut');
        await assertStoreSound(targetStore);
        const again = await runCli(args(target.url));
        assert.equal(again.code, 0, again.stderr);
        await assertStoreSound(targetStore);
        const co = await runCli(['checkout', root, out, '--remote', target.url, '--store', pulled]);
        assert.equal(co.code, 0, co.stderr);
        assert.deepEqual(describeTree(out), describeTree(src));
      } finally {
        await stall.close();
        removeDir(out);
        removeDir(pulled);
      }
    });
  });
});

test('the first stop ends a retry waiting out its backoff at once, with no new attempt', async () => {
  // A server that answers 503 with Retry-After: 10: the client's next attempt waits 10 s.
  let requests = 0;
  const server = http.createServer((req, res) => {
    requests++;
    req.resume();
    res.writeHead(503, { 'retry-after': '10', 'content-length': '0' });
    res.end();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const client = new RemoteClient({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, batch: 'off', retryPolicy: { maxMs: 10_000 } });
  try {
    const got = client.getBytes({ hash: 'ab'.repeat(32), size: 10 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    while (requests === 0) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 100)); // the answer is in: the client waits out its backoff
    const t0 = Date.now();
    client.stop();
    const e = await got;
    assert.ok(e instanceof InterruptedError, `interrupted, not ${String(e)}`);
    assert.ok(Date.now() - t0 < 1_000, `ended ${Date.now() - t0} ms after stop()`);
    assert.equal(requests, 1, 'no attempt after the stop');
  } finally {
    await client.close();
    server.closeAllConnections();
    server.close();
  }
});
