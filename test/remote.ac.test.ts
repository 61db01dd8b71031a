/**
 * The action cache of `treecast serve` (/ac/<sha256>): ActionResult validation on PUT, the
 * completeness check on GET (an entry naming an absent blob is a miss), replacement, instance
 * prefixes, read-only mode, tokens, --no-ac-validation, and what gc keeps for entries.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { type ActionResult, encodeActionResult, encodeTree } from '../src/core/action-result.js';
import { type Digest, digestOf } from '../src/core/digest.js';
import { directoryBlob } from '../src/core/reapi.js';
import { ActionCache } from '../src/store/action-cache.js';
import { LocalStore } from '../src/store/local.js';
import { gcStore } from '../src/store/maintenance.js';
import { json, leftoverTmp, removeDir, runCli, startServer, tempDir, type TestServer } from './helpers/remote.js';

const TOKEN = 'ac-token';
const auth = { authorization: `Bearer ${TOKEN}` };
const key = (s: string) => digestOf(Buffer.from(`action ${s}`)).hash;

async function put(url: string, body: Uint8Array, headers: Record<string, string> = auth): Promise<{ status: number; text: string }> {
  const r = await fetch(url, { method: 'PUT', headers, body });
  return { status: r.status, text: await r.text() };
}

async function get(url: string, method = 'GET', headers: Record<string, string> = auth): Promise<{ status: number; body: Buffer }> {
  const r = await fetch(url, { method, headers });
  return { status: r.status, body: Buffer.from(await r.arrayBuffer()) };
}

/** A small output tree: a Tree message (root + one child) and its file blobs, none stored yet. */
function outputTree() {
  const fileA = Buffer.from('output a\n');
  const fileB = Buffer.from('output b, in sub/\n');
  const sub = directoryBlob({ files: [{ name: 'b.txt', digest: digestOf(fileB), executable: false }], directories: [], symlinks: [] });
  const root = directoryBlob({ files: [{ name: 'a.txt', digest: digestOf(fileA), executable: true }], directories: [{ name: 'sub', digest: sub.digest }], symlinks: [] });
  const tree = encodeTree(root.bytes, [sub.bytes]);
  return { fileA, fileB, sub, root, tree, treeDigest: digestOf(tree) };
}

describe('action cache', () => {
  let dir: string;
  let srv: TestServer;
  let raw: TestServer;

  before(async () => {
    dir = tempDir('ac');
    srv = await startServer(join(dir, 'store'), { token: TOKEN });
    raw = await startServer(join(dir, 'raw'), { acValidation: false, maxBlobBytes: 1 << 20 });
  });
  after(async () => {
    await srv?.close();
    await raw?.close();
    removeDir(dir);
  });

  test('an ActionResult whose blobs are all stored reads back (GET, HEAD, any instance); one blob missing makes it a miss', async () => {
    const out = Buffer.from('compiled\n');
    const stdout = Buffer.from('warning: none\n');
    const t = outputTree();
    const ar: ActionResult = {
      outputFiles: [{ path: 'bazel-out/k8/bin/a.o', digest: digestOf(out), executable: false }],
      outputDirectories: [{ path: 'bazel-out/k8/bin/gen', treeDigest: t.treeDigest, topologicallySorted: false }],
      exitCode: 0,
      stdoutDigest: digestOf(stdout),
    };
    const bytes = encodeActionResult(ar);
    const k = key('complete');
    assert.equal((await put(`${srv.url}ci/main/ac/${k}`, bytes)).status, 200);
    // Every referenced blob is missing at first: a miss, for GET and HEAD alike.
    let r = await get(`${srv.url}ac/${k}`);
    assert.equal(r.status, 404);
    assert.match(r.body.toString(), /is a miss: blob .* is not in the store/);
    assert.equal((await get(`${srv.url}ac/${k}`, 'HEAD')).status, 404);
    // Upload all but one file inside the output tree: still a miss (bazel-remote checks the tree's files too).
    for (const b of [out, stdout, t.tree, t.fileA]) assert.equal((await put(`${srv.url}cas/${digestOf(b).hash}`, b)).status, 200);
    r = await get(`${srv.url}ac/${k}`);
    assert.equal(r.status, 404);
    assert.match(r.body.toString(), new RegExp(digestOf(t.fileB).hash));
    assert.equal((await put(`${srv.url}cas/${digestOf(t.fileB).hash}`, t.fileB)).status, 200);
    r = await get(`${srv.url}x/y/ac/${k}`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, bytes);
    const head = await fetch(`${srv.url}ac/${k}`, { method: 'HEAD', headers: auth });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(bytes.length));
    // A blob of the right hash but another size does not count.
    srv.store.removeBlobSync(digestOf(stdout).hash);
    assert.equal((await get(`${srv.url}ac/${k}`)).status, 404);
  });

  test('an entry naming many blobs, found whole, is remembered while blobs are added, until the store loses one of them or the entry changes', async () => {
    const files = Array.from({ length: 300 }, (_, i) => Buffer.from(`remembered output ${i}\n`));
    const ar: ActionResult = {
      outputFiles: files.map((b, i) => ({ path: `out/f${i}`, digest: digestOf(b), executable: false })),
      outputDirectories: [],
      exitCode: 0,
    };
    const bytes = encodeActionResult(ar);
    const k = key('remembered');
    for (const b of files) assert.equal((await put(`${srv.url}cas/${digestOf(b).hash}`, b)).status, 200);
    assert.equal((await put(`${srv.url}ac/${k}`, bytes)).status, 200);
    const remembered = () => srv.server.status().acRemembered;
    const before = remembered();
    await new Promise((r) => setTimeout(r, 80)); // the shard folders' last change must be older than a clock tick
    assert.equal((await get(`${srv.url}ac/${k}`)).status, 200);
    assert.equal(remembered(), before, 'the first GET checks every blob');
    let r = await get(`${srv.url}ac/${k}`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, bytes);
    assert.equal(remembered(), before + 1, 'the second GET is answered from the remembered entry');
    // Blobs added elsewhere (a push) change some folders: the entry's blobs there are looked at, not all.
    for (let i = 0; i < 20; i++) assert.equal((await put(`${srv.url}cas/${digestOf(Buffer.from(`unrelated ${i}`)).hash}`, Buffer.from(`unrelated ${i}`))).status, 200);
    assert.equal((await get(`${srv.url}ac/${k}`)).status, 200);
    assert.equal(remembered(), before + 2, 'still remembered after blobs were added');
    // A blob removed by hand, with no request to the server: the next GET is a miss naming it.
    const lost = digestOf(files[123]!);
    fs.rmSync(srv.store.blobPath(lost.hash));
    r = await get(`${srv.url}ac/${k}`);
    assert.equal(r.status, 404);
    assert.match(r.body.toString(), new RegExp(`is a miss: blob ${lost.hash}`));
    assert.equal(remembered(), before + 2);
    // Put back, found whole again, remembered again; then the entry replaced: its new bytes are checked.
    assert.equal((await put(`${srv.url}cas/${lost.hash}`, files[123]!)).status, 200);
    await new Promise((r) => setTimeout(r, 80));
    assert.equal((await get(`${srv.url}ac/${k}`)).status, 200);
    assert.equal((await get(`${srv.url}ac/${k}`)).status, 200);
    assert.equal(remembered(), before + 3);
    const absent = Buffer.from('never uploaded\n');
    const replaced = encodeActionResult({ ...ar, outputFiles: [...ar.outputFiles, { path: 'out/absent', digest: digestOf(absent), executable: false }] });
    assert.equal((await put(`${srv.url}ac/${k}`, replaced)).status, 200);
    r = await get(`${srv.url}ac/${k}`);
    assert.equal(r.status, 404);
    assert.match(r.body.toString(), new RegExp(digestOf(absent).hash));
    assert.equal(remembered(), before + 3);
  });

  test('an entry is replaced atomically, and a hit refreshes its last use', async () => {
    const k = key('replace');
    const one = encodeActionResult({ outputFiles: [], outputDirectories: [], exitCode: 1 });
    const two = encodeActionResult({ outputFiles: [], outputDirectories: [], exitCode: 2 });
    assert.equal((await put(`${srv.url}ac/${k}`, one)).status, 200);
    assert.equal((await put(`${srv.url}ac/${k}`, two)).status, 200);
    assert.deepEqual((await get(`${srv.url}ac/${k}`)).body, two);
    const ac = new ActionCache(srv.store);
    const old = new Date(Date.now() - 86_400_000);
    fs.utimesSync(ac.path(k), old, old);
    assert.equal((await get(`${srv.url}ac/${k}`)).status, 200);
    assert.ok(fs.statSync(ac.path(k)).mtimeMs > Date.now() - 60_000, 'a GET marks the entry used');
    assert.deepEqual(leftoverTmp(srv.store.root), []);
  });

  test('hostile or malformed ActionResults are 400 and store nothing', async () => {
    const good = encodeActionResult({ outputFiles: [{ path: 'a', digest: digestOf(Buffer.from('x')), executable: false }], outputDirectories: [], exitCode: 0 });
    const hugeRepeated: Buffer[] = [];
    // 100,001 output files, each `path: "a"` only: a small body with a repeated field over the limit.
    const file = Buffer.from([0x12, 0x03, 0x0a, 0x01, 0x61]);
    for (let i = 0; i < 100_001; i++) hugeRepeated.push(file);
    const cases: [string, Buffer][] = [
      ['truncated', good.subarray(0, good.length - 3)],
      ['bad wire type', Buffer.from([0x13, 0x00])], // field 2 with wire type 3 (start group)
      ['bad digest', encodeActionResult({ outputFiles: [], outputDirectories: [], exitCode: 0, stdoutDigest: { hash: 'zz'.repeat(32), size: 1 } })],
      ['length past the end', Buffer.from([0x12, 0x7f, 0x0a])],
      ['huge repeated field', Buffer.concat(hugeRepeated)],
    ];
    for (const [name, body] of cases) {
      const k = key(`hostile ${name}`);
      const r = await put(`${srv.url}ac/${k}`, body);
      assert.equal(r.status, 400, `${name}: ${r.text}`);
      assert.equal(new ActionCache(srv.store).size(k), undefined, `${name}: nothing stored`);
      assert.equal((await get(`${srv.url}ac/${k}`)).status, 404);
    }
    assert.deepEqual(leftoverTmp(srv.store.root), []);
  });

  test('tokens, read-only mode and methods apply to /ac/ as to /cas/', async () => {
    const k = key('auth');
    const body = encodeActionResult({ outputFiles: [], outputDirectories: [], exitCode: 0 });
    assert.equal((await put(`${srv.url}ac/${k}`, body, {})).status, 401);
    assert.equal((await get(`${srv.url}ac/${k}`, 'GET', {})).status, 401);
    assert.equal(new ActionCache(srv.store).size(k), undefined);
    const r = await fetch(`${srv.url}ac/${k}`, { method: 'DELETE', headers: auth });
    assert.equal(r.status, 405);
    assert.equal(r.headers.get('allow'), 'GET, HEAD, PUT');
    await r.arrayBuffer();
    const ro = await startServer(join(dir, 'ro'), { readOnly: true });
    try {
      assert.equal((await put(`${ro.url}ac/${k}`, body, {})).status, 405);
      assert.equal(new ActionCache(ro.store).size(k), undefined);
    } finally {
      await ro.close();
    }
  });

  test('--no-ac-validation stores and serves any bytes, up to the blob size limit', async () => {
    const k = key('ccache');
    const blob = Buffer.concat([Buffer.from('cCaC'), Buffer.alloc(300_000, 9)]);
    assert.equal((await put(`${raw.url}ccache/ac/${k}`, blob, {})).status, 200);
    const r = await get(`${raw.url}ccache/ac/${k}`, 'GET', {});
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, blob);
    assert.equal((await put(`${raw.url}ac/${key('big')}`, Buffer.alloc((1 << 20) + 1), {})).status, 413);
    assert.equal(new ActionCache(raw.store).size(key('big')), undefined);
    // The same bytes on a validating server are refused.
    assert.equal((await put(`${srv.url}ac/${k}`, blob)).status, 400);
  });

  test('gc keeps what entries reference (the Tree, its Directories and files, the root tree); --max-age drops unused entries, then what only they kept', async () => {
    const store = LocalStore.open(join(dir, 'gc'));
    const ac = new ActionCache(store);
    const t = outputTree();
    const stdout = Buffer.from('stdout of the action\n');
    const loose = Buffer.from('referenced by nothing\n');
    const rootTreeFile = Buffer.from('a file only under the root directory digest\n');
    const rootDir = directoryBlob({ files: [{ name: 'only.txt', digest: digestOf(rootTreeFile), executable: false }], directories: [], symlinks: [] });
    const stored = (b: Buffer): Digest => store.putSync(b);
    for (const b of [t.fileA, t.fileB, t.tree, t.sub.bytes, t.root.bytes, stdout, loose, rootTreeFile, rootDir.bytes]) stored(b);
    const fresh = encodeActionResult({
      outputFiles: [],
      outputDirectories: [{ path: 'out', treeDigest: t.treeDigest, topologicallySorted: false }],
      exitCode: 0,
      stdoutDigest: digestOf(stdout),
    });
    const old = encodeActionResult({
      outputFiles: [],
      outputDirectories: [{ path: 'o', treeDigest: digestOf(Buffer.from('absent tree')), rootDirectoryDigest: rootDir.digest, topologicallySorted: false }],
      exitCode: 0,
    });
    ac.write(key('fresh'), fresh);
    ac.write(key('old'), old);
    ac.write(key('ccache'), Buffer.from('not an ActionResult'));
    const longAgo = new Date(Date.now() - 10 * 86_400_000);
    fs.utimesSync(ac.path(key('old')), longAgo, longAgo);
    const has = (b: Buffer) => store.hasSync(digestOf(b));

    let r = gcStore(store, { dryRun: false, graceSeconds: 0 });
    assert.equal(r.actions, 3);
    assert.deepEqual(r.removed, [digestOf(loose).hash], 'only the blob nothing references goes');
    for (const b of [t.fileA, t.fileB, t.tree, t.sub.bytes, t.root.bytes, stdout, rootTreeFile, rootDir.bytes]) assert.ok(has(b));

    r = gcStore(store, { dryRun: true, graceSeconds: 0, maxAgeSeconds: 7 * 86_400 });
    assert.deepEqual(r.removedActions, [key('old')]);
    assert.deepEqual(r.removed.sort(), [digestOf(rootTreeFile).hash, rootDir.digest.hash].sort());
    assert.ok(fs.existsSync(ac.path(key('old'))), 'a dry run removes nothing');

    r = gcStore(store, { dryRun: false, graceSeconds: 0, maxAgeSeconds: 7 * 86_400 });
    assert.deepEqual(r.removedActions, [key('old')]);
    assert.ok(!fs.existsSync(ac.path(key('old'))));
    assert.ok(!has(rootTreeFile) && !has(rootDir.bytes), 'what only the dropped entry kept is gone');
    for (const b of [t.fileA, t.fileB, t.tree, t.sub.bytes, t.root.bytes, stdout]) assert.ok(has(b), 'what the used entry references stays');
    assert.ok(fs.existsSync(ac.path(key('fresh'))) && fs.existsSync(ac.path(key('ccache'))));
  });

  test('gc --max-age from the command line: durations, --json, and a bad duration is a usage error', async () => {
    const root = join(dir, 'gc-cli');
    const store = LocalStore.open(root);
    const ac = new ActionCache(store);
    const out = Buffer.from('kept only by the stale entry\n');
    store.putSync(out);
    ac.write(key('stale'), encodeActionResult({ outputFiles: [{ path: 'o', digest: digestOf(out), executable: false }], outputDirectories: [], exitCode: 0 }));
    ac.write(key('recent'), encodeActionResult({ outputFiles: [], outputDirectories: [], exitCode: 0 }));
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
    fs.utimesSync(ac.path(key('stale')), twoHoursAgo, twoHoursAgo);
    let r = await runCli(['gc', '--max-age', '3h', '--grace', '0', '--json', '--store', root]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(json(r).removedActions, [], '3h keeps an entry used 2 h ago');
    r = await runCli(['gc', '--max-age', '90m', '--grace', '0', '--json', '--store', root]);
    assert.deepEqual(json(r).removedActions, [key('stale')]);
    assert.deepEqual(json(r).removed, [digestOf(out).hash]);
    assert.equal(json(r).actions, 1);
    r = await runCli(['gc', '--max-age', '7x', '--store', root]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--max-age '7x' is not a duration/);
  });
});
