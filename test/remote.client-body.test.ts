import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { RemoteClient } from '../src/remote/client.js';
import { DigestMismatchError } from '../src/errors.js';
import { digestOf } from '../src/core/digest.js';

// A plain cache that answers every blob GET with more bytes than the blob has: the client must
// refuse the body before any of its bytes reach the caller (a streamed file, a slab).
test('a GET body longer than the blob is refused before the sink sees a byte', async () => {
  const blob = Buffer.from('abc');
  const d = digestOf(blob);
  const server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.end(Buffer.concat([blob, Buffer.from('-and-more')]));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const client = new RemoteClient({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, retries: 0 });
  try {
    const seen: Buffer[] = [];
    await assert.rejects(
      client.readStream(d, (c) => seen.push(c), () => seen.splice(0)),
      (e: unknown) => e instanceof DigestMismatchError && /more than 3 bytes arrived/.test(e.message),
    );
    assert.equal(Buffer.concat(seen).length, 0);
  } finally {
    await client.close();
    server.closeAllConnections();
    server.close();
  }
});
