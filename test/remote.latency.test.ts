/**
 * The fetch window really keeps N requests in flight: measured by the server (its /status high-water
 * mark, with latency added inside the server) and by a delaying proxy in front of a plain cache.
 * Counts only, no timing assertions.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { json, runCli, startServer } from './helpers/remote.js';
import { useRemoteFixture } from './helpers/remote-fixture.js';
import { startProxy } from './helpers/remote-proxy.js';

describe('remote latency: requests in flight', () => {
  let dir: string;
  let root: string;
  useRemoteFixture('lat', { tree: { dirs: 50, files: 20 }, server: false }, (f) => ({ dir, root } = f));

  for (const n of [1, 8]) {
    test(`batch pull at --concurrency ${n}: the server saw exactly ${n} requests in flight`, async () => {
      const s = await startServer(join(dir, 'server'), { latencyMs: 30 });
      try {
        const r = await runCli(['pull', root, s.url, '--store', join(dir, `c${n}`), '--concurrency', String(n), '--json']);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(json(r).maxInFlight, n);
        const status = (await (await fetch(`${s.url}status`)).json()) as { maxInFlight: number; requests: number };
        assert.equal(status.maxInFlight, n);
        assert.ok(status.requests > 2 * n, 'enough requests for the window to fill');
      } finally {
        await s.close();
      }
    });
  }

  test('plain pull through a delaying proxy keeps --concurrency requests in flight', async () => {
    const s = await startServer(join(dir, 'server'), { batch: false });
    const proxy = await startProxy({ upstream: s.url, delayMs: 20 });
    try {
      const r = await runCli(['pull', root, proxy.url, '--store', join(dir, 'p'), '--concurrency', '12', '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(proxy.maxInFlight, 12);
      assert.equal(json(r).maxInFlight, 12);
      // Directory messages were fetched through the same window, breadth first.
      assert.ok(proxy.requests.length > 500);
    } finally {
      await proxy.close();
      await s.close();
    }
  });
});
