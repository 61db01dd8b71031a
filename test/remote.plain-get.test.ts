import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { RemoteClient } from '../src/remote/client.js';
import { BlobNotFoundError, DigestMismatchError } from '../src/errors.js';
import { digestOf } from '../src/core/digest.js';

// A plain cache's blob read into memory (RemoteClient.readOneAt, a remote checkout's one GET per
// blob): the body lands at its offset and nowhere else, a wrong length is refused, a 404 is the
// blob missing, and a 503's Retry-After is honoured on the retry.

type Answer = (req: http.IncomingMessage, res: http.ServerResponse, n: number) => void;

async function withServer(answer: Answer, fn: (client: RemoteClient) => Promise<void>): Promise<void> {
  let n = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    answer(req, res, ++n);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const client = new RemoteClient({
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    batch: 'off',
    retries: 2,
    retryPolicy: { baseMs: 1, maxMs: 5000 },
  });
  try {
    await fn(client);
  } finally {
    await client.close();
    server.closeAllConnections();
    server.close();
  }
}

const blob = Buffer.from('the blob bytes');
const d = digestOf(blob);

test('a blob lands at its offset; the bytes around it are untouched', async () => {
  await withServer(
    (_req, res) => res.end(blob),
    async (client) => {
      const into = Buffer.alloc(blob.length + 16, 0xee);
      await client.readOneAt(d, into, 8);
      assert.deepEqual(into.subarray(8, 8 + blob.length), blob);
      assert.ok(into.subarray(0, 8).every((b) => b === 0xee));
      assert.ok(into.subarray(8 + blob.length).every((b) => b === 0xee));
      assert.equal(client.stats.fetched, 1);
      assert.equal(client.stats.requests, 1);
    },
  );
});

test('a body longer than the blob is refused before it writes past the blob', async () => {
  await withServer(
    (_req, res) => res.end(Buffer.concat([blob, Buffer.from('-and-more')])),
    async (client) => {
      const into = Buffer.alloc(blob.length + 16, 0xee);
      await assert.rejects(client.readOneAt(d, into, 0), (e: unknown) => e instanceof DigestMismatchError && /more than 14 bytes arrived/.test(e.message));
      assert.ok(into.subarray(blob.length).every((b) => b === 0xee), 'bytes past the blob were written');
      assert.equal(client.stats.requests, 1, 'an integrity failure is never retried');
    },
  );
});

test('a body shorter than the blob is refused', async () => {
  await withServer(
    (_req, res) => res.end(blob.subarray(0, 5)),
    async (client) => {
      await assert.rejects(client.readOneAt(d, Buffer.alloc(blob.length), 0), (e: unknown) => e instanceof DigestMismatchError && /5 of 14 bytes arrived/.test(e.message));
    },
  );
});

test('a 404 is the blob missing on the server', async () => {
  await withServer(
    (_req, res) => {
      res.statusCode = 404;
      res.end('no');
    },
    async (client) => {
      await assert.rejects(client.readOneAt(d, Buffer.alloc(blob.length), 0), (e: unknown) => e instanceof BlobNotFoundError && e.message.includes(d.hash));
    },
  );
});

test("a 503 is retried after its Retry-After, and the retry's body is the one kept", async () => {
  await withServer(
    (_req, res, n) => {
      if (n === 1) {
        res.writeHead(503, { 'Retry-After': '1' });
        res.end('busy');
      } else {
        res.end(blob);
      }
    },
    async (client) => {
      const into = Buffer.alloc(blob.length);
      const t0 = Date.now();
      await client.readOneAt(d, into, 0);
      const waited = Date.now() - t0;
      assert.deepEqual(into, blob);
      assert.equal(client.stats.retried, 1);
      assert.equal(client.stats.requests, 2);
      assert.equal(client.stats.fetched, 1);
      // The policy's own backoff is 1 ms: only the header makes the client wait a second.
      assert.ok(waited >= 900, `retried after ${waited} ms, not after the 1 s the server asked for`);
    },
  );
});

test('a failure that outlasts the retries reaches the caller as a typed error naming the blob', async () => {
  await withServer(
    (_req, res) => {
      res.statusCode = 500;
      res.end('down');
    },
    async (client) => {
      await assert.rejects(client.readOneAt(d, Buffer.alloc(blob.length), 0), (e: unknown) => (e as { code?: string }).code === 'ERR_TREECAST_REMOTE' && (e as Error).message.includes(d.hash) && /HTTP 500/.test((e as Error).message));
      assert.equal(client.stats.requests, 3);
      assert.equal(client.stats.retried, 2);
    },
  );
});
