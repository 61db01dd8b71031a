import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

// RemoteFetcher's holdYoungGeneration (remote/young-generation.ts): against a plain cache the
// young generation stops growing for the rest of the process; against a treecast server, or when
// not asked, V8 grows it as usual. Each case runs in a process of its own (the V8 flag is
// process-wide), against a real HTTP server on loopback, and then allocates what makes V8 grow
// the young generation: many objects that survive a scavenge.

const fetchModule = new URL('../src/remote/fetch.js', import.meta.url).href;
const storeModule = new URL('../src/store/local.js', import.meta.url).href;
const wireModule = new URL('../src/remote/wire.js', import.meta.url).href;

const child = `
import * as http from 'node:http';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import { once } from 'node:events';
import { RemoteFetcher } from ${JSON.stringify(fetchModule)};
import { LocalStore } from ${JSON.stringify(storeModule)};
import { BATCH_PROTOCOL } from ${JSON.stringify(wireModule)};
const [server, hold] = process.argv.slice(1);
const http1 = http.createServer((req, res) => {
  req.resume();
  if (server === 'treecast' && req.url === '/status') res.end(JSON.stringify({ protocol: BATCH_PROTOCOL }));
  else { res.statusCode = 404; res.end(); }
});
http1.listen(0, '127.0.0.1');
await once(http1, 'listening');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'treecast-young-'));
try {
  const fetcher = new RemoteFetcher(LocalStore.open(path.join(dir, 'store')), { url: 'http://127.0.0.1:' + http1.address().port + '/' }, { holdYoungGeneration: hold === 'hold' });
  await fetcher.ensureBlobs([]);
  await fetcher.close();
} finally {
  http1.close();
  fs.rmSync(dir, { recursive: true, force: true });
}
const newSpace = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size;
const before = newSpace();
const kept = [];
let young = [];
for (let i = 0; i < 3e6; i++) {
  young.push({ i, s: 'x' + i });
  if (young.length > 20000) {
    kept.push(young[5]);
    young = [];
  }
}
console.log(JSON.stringify({ before, after: newSpace(), kept: kept.length }));
`;

function newSpaceGrowth(server: 'plain' | 'treecast', hold: boolean): { before: number; after: number } {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', child, server, hold ? 'hold' : 'no'], { encoding: 'utf8', cwd: fileURLToPath(new URL('.', import.meta.url)) });
  return JSON.parse(out.trim().split('\n').pop()!) as { before: number; after: number };
}

const MB = 1 << 20;

test('from a plain cache, with holdYoungGeneration, the young generation keeps its size', () => {
  const { before, after } = newSpaceGrowth('plain', true);
  assert.ok(after <= before, `new space grew from ${before / MB} MB to ${after / MB} MB`);
});

test('from a plain cache without holdYoungGeneration, V8 grows it as usual', () => {
  const { before, after } = newSpaceGrowth('plain', false);
  assert.ok(after >= 4 * before && after >= 16 * MB, `new space went from ${before / MB} MB to only ${after / MB} MB`);
});

test('from a treecast server, holdYoungGeneration leaves it to V8', () => {
  const { before, after } = newSpaceGrowth('treecast', true);
  assert.ok(after >= 4 * before && after >= 16 * MB, `new space went from ${before / MB} MB to only ${after / MB} MB`);
});
