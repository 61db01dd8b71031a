/**
 * Symbolic links planted in the store's refs/, ac/ (action cache), checkouts/ (checkout records),
 * locks/, stat-cache/ and complete/ (pull completeness records), and in cas/ (a blob or a blob shard
 * folder): never read, served, listed or written through; reported as ERR_TREECAST_STORE_DAMAGED
 * (exit 5) naming the link, by `verify` too, and removed (the link only, never its target) by
 * `verify --repair`. A symlink, folder or fifo at a blob's own name is never counted as the blob
 * held (snapshot, pull, serve's /missing).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { digestOf } from '../src/core/digest.js';
import { encodeActionResult } from '../src/core/action-result.js';
import { LocalStore } from '../src/store/local.js';
import { StatCache } from '../src/capture/stat-cache.js';
import { markComplete, settledStateHolding } from '../src/store/completeness.js';
import { parseDigest } from '../src/core/digest.js';
import { StoreDamagedError } from '../src/errors.js';
import { createHash } from 'node:crypto';
import { tempDir, writeTree } from './helpers/tmp.js';
import { servedUrl, startCli, waitExit } from './helpers/remote.js';
import { decodeDigestList, encodeDigestList } from '../src/remote/wire.js';

const bin = new URL('../../bin/treecast', import.meta.url).pathname;

function tc(args: string[], store: string) {
  const r = spawnSync(process.execPath, [bin, ...args], { env: { ...process.env, TREECAST_STORE: store }, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** A store with one tree under ref `r`; returns its digest. */
function storeWithTree(dir: string, files: Record<string, string> = { a: 'alpha content', 'd/b': 'beta content' }): { store: string; tree: string } {
  const store = join(dir, 's');
  writeTree(join(dir, 'src'), files);
  const snap = tc(['snapshot', join(dir, 'src'), '--ref', 'r'], store);
  assert.equal(snap.code, 0, snap.err);
  return { store, tree: snap.out.trim().split('\n').pop()! };
}

/**
 * A store whose tree (ref `r`) holds one file, `a`, whose blob lies in a shard no directory message
 * of the tree uses, so that shard can be planted alone.
 */
function storeWithBlobApart(dir: string, prefix: string): { text: string; store: string; tree: string } {
  for (let i = 0; ; i++) {
    const text = `${prefix} ${i}`;
    const { store, tree } = storeWithTree(join(dir, `try${i}`), { a: text });
    if (tree.slice(0, 2) !== digestOf(Buffer.from(text)).hash.slice(0, 2)) return { text, store, tree };
  }
}

/** Every file under `root` with its bytes, to show nothing there changed. */
function contents(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rel of fs.readdirSync(root, { recursive: true }) as string[]) {
    const p = join(root, rel);
    const st = fs.lstatSync(p);
    out[rel] = st.isFile() ? `${fs.readFileSync(p, 'base64')} ${st.mtimeMs}` : st.isDirectory() ? 'dir' : 'other';
  }
  return out;
}

function damagedAt(r: { code: number | null; err: string }, path: string, what: string): void {
  assert.equal(r.code, 5, `${what}: ${r.err}`);
  assert.match(r.err, /ERR_TREECAST_STORE_DAMAGED/, what);
  assert.ok(r.err.includes(`${path} is a symbolic link`), `${what} names the link: ${r.err}`);
  assert.match(r.err, /treecast verify --repair/, `${what} points to verify --repair`);
}

function verifyFindsAndRepairs(store: string, link: string, target: string): void {
  const before = contents(target);
  const found = tc(['verify'], store);
  assert.equal(found.code, 5, found.err);
  assert.ok(found.out.includes(`damaged ${link} (a symbolic link (not followed))`), found.out);
  const repaired = tc(['verify', '--repair', '--json'], store);
  assert.equal(repaired.code, 0, repaired.err);
  assert.ok((JSON.parse(repaired.out).corrupt as { path: string }[]).some((c) => c.path === link), repaired.out);
  assert.equal(fs.lstatSync(link, { throwIfNoEntry: false }), undefined, 'the link is gone');
  assert.deepEqual(contents(target), before, 'its target is untouched');
  const again = tc(['verify'], store);
  assert.equal(again.code, 0, again.out + again.err);
}

test('a ref that is a symlink is never read (refs, ls, checkout, gc), a write replaces the link itself, verify --repair removes only the link', () => {
  const dir = tempDir();
  const { store, tree } = storeWithTree(dir);
  // Outside the store, a file that reads as a valid ref: followed, it would be taken as one.
  const outside = join(dir, 'outside');
  fs.mkdirSync(outside);
  fs.writeFileSync(join(outside, 'ref'), `${tree}\n`);
  const link = join(store, 'refs', 'evil');
  fs.symlinkSync(join(outside, 'ref'), link);
  const blobs = () => fs.readdirSync(join(store, 'cas'), { recursive: true }).length;
  const held = blobs();

  damagedAt(tc(['refs'], store), link, 'refs');
  damagedAt(tc(['ls', 'evil'], store), link, 'ls');
  damagedAt(tc(['checkout', 'evil', join(dir, 'co')], store), link, 'checkout');
  // An action cache entry unused for long: gc --max-age would drop it, but stops at the ref first.
  const key = 'ee'.padEnd(64, '4');
  const entry = join(store, 'ac', 'ee', key);
  fs.mkdirSync(join(entry, '..'), { recursive: true });
  fs.writeFileSync(entry, 'ccache bytes');
  fs.utimesSync(entry, new Date(0), new Date(0));
  damagedAt(tc(['gc', '--grace', '0', '--max-age', '1s'], store), link, 'gc');
  assert.equal(blobs(), held, 'gc removed nothing');
  assert.ok(fs.existsSync(entry), 'gc dropped no action cache entry');
  assert.equal(fs.existsSync(join(dir, 'co')), false, 'checkout wrote nothing');

  verifyFindsAndRepairs(store, link, outside);

  // Written again: the rename replaces a link planted at the ref's name, never writes its target.
  fs.symlinkSync(join(outside, 'ref'), link);
  const before = contents(outside);
  const snap = tc(['snapshot', join(dir, 'src'), '--ref', 'evil'], store);
  assert.equal(snap.code, 0, snap.err);
  assert.ok(fs.lstatSync(link).isFile(), 'the ref is a file of the store now');
  assert.deepEqual(contents(outside), before);
});

test('a folder of refs that is a symlink is never read, listed, written, deleted or renamed through', () => {
  const dir = tempDir();
  const { store, tree } = storeWithTree(dir);
  const outside = join(dir, 'outside');
  writeTree(outside, { x: `${tree}\n`, 'deeper/y': `${tree}\n` });
  const link = join(store, 'refs', 'team');
  fs.symlinkSync(outside, link);
  const before = contents(outside);

  damagedAt(tc(['ls', 'team/x'], store), link, 'ls');
  damagedAt(tc(['refs'], store), link, 'refs');
  damagedAt(tc(['snapshot', join(dir, 'src'), '--ref', 'team/new'], store), link, 'snapshot --ref');
  damagedAt(tc(['refs', '--delete', 'team/x'], store), link, 'refs --delete');
  damagedAt(tc(['refs', '--rename', 'team/x', 'mine'], store), link, 'refs --rename from');
  damagedAt(tc(['refs', '--rename', 'r', 'team/z'], store), link, 'refs --rename onto');
  assert.ok(fs.existsSync(join(store, 'refs', 'r')), 'ref r is still there');
  assert.deepEqual(contents(outside), before, 'nothing written or removed through the link');

  verifyFindsAndRepairs(store, link, outside);
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 'team/new'], store).code, 0);
  assert.deepEqual(contents(outside), before);
});

/** Starts `treecast serve` (the real command) on a free loopback port. */
async function serve(store: string, args: string[] = []) {
  const child = startCli(['serve', '--store', store, '--listen', '127.0.0.1:0', '--json', ...args]);
  const url = await servedUrl(child);
  return {
    url,
    stop: async () => {
      child.kill('SIGTERM');
      await waitExit(child);
    },
  };
}

test('treecast serve never sends what a symlink planted in ac/ points to (entry or shard folder), nor writes through one; gc does not read it', async () => {
  const dir = tempDir();
  const { store } = storeWithTree(dir);
  const local = new LocalStore(store);
  // The secret: a valid ActionResult naming a blob the store holds, so validation alone would serve it.
  const pinned = Buffer.from('a blob only the planted entry names');
  const pinnedDigest = local.putSync(pinned);
  fs.utimesSync(local.blobPath(pinnedDigest.hash), new Date(0), new Date(0));
  const secret = encodeActionResult({ outputFiles: [], outputDirectories: [], exitCode: 0, stdoutDigest: pinnedDigest });
  const outside = join(dir, 'outside');
  fs.mkdirSync(outside);
  fs.writeFileSync(join(outside, 'secret'), secret);
  const keyA = 'ab'.padEnd(64, '1');
  const keyB = 'cd'.padEnd(64, '2');
  fs.writeFileSync(join(outside, keyB), secret);
  fs.mkdirSync(join(store, 'ac', 'ab'), { recursive: true });
  const entryLink = join(store, 'ac', 'ab', keyA);
  const shardLink = join(store, 'ac', 'cd');
  fs.symlinkSync(join(outside, 'secret'), entryLink);
  fs.symlinkSync(outside, shardLink);
  const before = contents(outside);

  for (const args of [[], ['--no-ac-validation']]) {
    const server = await serve(store, args);
    try {
      for (const key of [keyA, keyB]) {
        for (const method of ['GET', 'HEAD']) {
          const r = await fetch(`${server.url}ac/${key}`, { method });
          const body = Buffer.from(await r.arrayBuffer());
          assert.equal(r.status, 404, `${method} ${key} ${args.join(' ')}: ${body}`);
          assert.ok(!body.includes(secret), 'the target is not sent');
        }
      }
      // A write into the linked shard folder is refused; one at the linked entry's name replaces the link.
      const put = await fetch(`${server.url}ac/${'cd'.padEnd(64, '3')}`, { method: 'PUT', body: secret });
      await put.arrayBuffer();
      assert.notEqual(put.status, 200, 'nothing written into the linked shard');
    } finally {
      await server.stop();
    }
  }
  assert.deepEqual(contents(outside), before, 'nothing written, touched or removed through the links');

  // gc's walk does not read the planted entries: the blob only they name is not kept, and gc
  // --max-age removes nothing through them.
  const gc = tc(['gc', '--grace', '0', '--json'], store);
  assert.equal(gc.code, 0, gc.err);
  assert.ok((JSON.parse(gc.out).removed as string[]).includes(pinnedDigest.hash), gc.out);
  fs.utimesSync(join(outside, 'secret'), new Date(0), new Date(0));
  fs.utimesSync(join(outside, keyB), new Date(0), new Date(0));
  const before2 = contents(outside);
  const aged = tc(['gc', '--grace', '0', '--max-age', '1s', '--json'], store);
  assert.equal(aged.code, 0, aged.err);
  assert.deepEqual(JSON.parse(aged.out).removedActions, [], 'a planted link is no entry to drop');
  assert.deepEqual(contents(outside), before2);

  verifyFindsAndRepairs(store, shardLink, outside);
  fs.symlinkSync(join(outside, 'secret'), entryLink); // verify --repair removed both; check the entry alone
  verifyFindsAndRepairs(store, entryLink, outside);
});

test('a checkout record or checkouts/ folder that is a symlink is never read or written through; gc does not read it', () => {
  const dir = tempDir();
  const { store, tree } = storeWithTree(dir);
  const target = join(dir, 'co');
  assert.equal(tc(['checkout', 'r', target], store).code, 0);
  const recDir = join(store, 'checkouts');
  const [name] = fs.readdirSync(recDir);
  const record = join(recDir, name!);
  const outside = join(dir, 'outside');
  fs.mkdirSync(outside);
  fs.copyFileSync(record, join(outside, name!)); // a valid record: followed, checkout would trust it

  // The record file itself a link.
  fs.rmSync(record);
  fs.symlinkSync(join(outside, name!), record);
  let before = contents(outside);
  damagedAt(tc(['checkout', 'r', target], store), record, 'checkout');
  damagedAt(tc(['status', target], store), record, 'status');
  // gc does not read it: with no ref, the checked-out tree is not kept through the link.
  fs.rmSync(join(store, 'refs', 'r'));
  const gc = tc(['gc', '--grace', '0', '--json'], store);
  assert.equal(gc.code, 0, gc.err);
  assert.ok((JSON.parse(gc.out).removed as string[]).includes(tree.split('/')[0]!), `the tree is not pinned by the linked record: ${gc.out}`);
  assert.deepEqual(contents(outside), before);
  verifyFindsAndRepairs(store, record, outside);

  // The folder a link.
  const { store: store2 } = storeWithTree(join(dir, 'two'));
  const target2 = join(dir, 'co2');
  assert.equal(tc(['checkout', 'r', target2], store2).code, 0);
  const recDir2 = join(store2, 'checkouts');
  for (const n of fs.readdirSync(recDir2)) fs.copyFileSync(join(recDir2, n), join(outside, n));
  fs.rmSync(recDir2, { recursive: true });
  fs.symlinkSync(outside, recDir2);
  before = contents(outside);
  damagedAt(tc(['checkout', 'r', target2], store2), recDir2, 'checkout');
  damagedAt(tc(['checkout', 'r', join(dir, 'co3')], store2), recDir2, 'a new checkout');
  damagedAt(tc(['status', target2], store2), recDir2, 'status');
  const gc2 = tc(['gc', '--grace', '0'], store2);
  assert.equal(gc2.code, 0, gc2.err);
  assert.deepEqual(contents(outside), before, 'nothing written or removed through the link');
  verifyFindsAndRepairs(store2, recDir2, outside);
  assert.equal(tc(['checkout', 'r', target2], store2).code, 0, 'a checkout works again once repaired');
});

test('pack of a tree from the store refuses a blob shard folder that is a symlink, even one holding the right bytes', () => {
  const dir = tempDir();
  const { text, store, tree } = storeWithBlobApart(dir, 'packed file content');
  const d = digestOf(Buffer.from(text));
  const shardDir = join(store, 'cas', d.hash.slice(0, 2));
  // The shard moved outside the store and linked back: the blob there is the real one, with the right bytes.
  const outside = join(dir, 'outside-shard');
  fs.renameSync(shardDir, outside);
  fs.symlinkSync(outside, shardDir);
  const before = contents(outside);
  for (const out of ['out.zip', 'out.tar']) {
    const r = tc(['pack', tree, join(dir, out)], store);
    damagedAt(r, shardDir, out);
    assert.equal(fs.existsSync(join(dir, out)), false, 'no archive written');
  }
  assert.deepEqual(contents(outside), before);
  verifyFindsAndRepairs(store, shardDir, outside);
});

/** A folder outside the store holding a canary file (and the link's targets): nothing may change there. */
function canary(dir: string, files: Record<string, string> = {}): string {
  const outside = join(dir, 'outside');
  writeTree(outside, { canary: 'canary bytes\n', ...files });
  return outside;
}

/** The three targets a planted link is tried with: the canary file, the folder holding it, and a name that does not exist there. */
function targets(outside: string): [string, string][] {
  return [
    ['a file', join(outside, 'canary')],
    ['a folder', outside],
    ['nothing (dangling)', join(outside, 'absent')],
  ];
}

/**
 * Plants `link` pointing at each of targets(outside) in turn (`plant` first makes room for it):
 * `run` fails naming the link with nothing outside touched, and verify --repair removes only the
 * link; `then` runs after each.
 */
function refusedAtEachLink(
  store: string,
  link: string,
  outside: string,
  label: string,
  run: () => { code: number | null; err: string },
  o: { plant?: () => void; then?: () => void } = {},
): void {
  for (const [what, target] of targets(outside)) {
    o.plant?.();
    fs.symlinkSync(target, link);
    const before = contents(outside);
    damagedAt(run(), link, `${label} linked to ${what}`);
    untouched(outside, before, `${label} linked to ${what}`);
    verifyFindsAndRepairs(store, link, outside);
    o.then?.();
  }
}

function untouched(outside: string, before: Record<string, string>, what: string): void {
  assert.deepEqual(contents(outside), before, `${what}: nothing written, touched or removed through the link`);
  assert.equal(fs.existsSync(join(outside, 'absent')), false, `${what}: a dangling link's target is not made`);
}

test('a locks/ folder that is a symlink (to a file, a folder, or dangling) is never written into: snapshot, checkout and gc fail naming it', () => {
  const dir = tempDir();
  const { store } = storeWithTree(dir);
  // Lock-shaped names in the target folder: a gc reading there would take them for stale locks and remove them.
  const outside = canary(dir, { 'writer-1-aa.lock': 'not a lock', 'checkout-bb.lock': 'not a lock' });
  const link = join(store, 'locks');
  fs.rmSync(link, { recursive: true, force: true });
  for (const [what, target] of targets(outside)) {
    fs.symlinkSync(target, link);
    const before = contents(outside);
    damagedAt(tc(['snapshot', join(dir, 'src'), '--ref', 'r2'], store), link, `snapshot, link to ${what}`);
    damagedAt(tc(['checkout', 'r', join(dir, 'co')], store), link, `checkout, link to ${what}`);
    damagedAt(tc(['gc', '--grace', '0'], store), link, `gc, link to ${what}`);
    assert.equal(fs.existsSync(join(store, 'refs', 'r2')), false, 'snapshot recorded nothing');
    assert.equal(fs.existsSync(join(dir, 'co')), false, 'checkout wrote nothing');
    untouched(outside, before, `link to ${what}`);
    verifyFindsAndRepairs(store, link, outside);
  }
  assert.equal(tc(['gc', '--grace', '0'], store).code, 0, 'gc works again once repaired');
  assert.ok(fs.lstatSync(link).isDirectory(), 'locks/ is a real folder again');
});

test('a lock file in locks/ that is a symlink is never read or written through: gc, snapshot and checkout fail naming it', () => {
  const dir = tempDir();
  const { store } = storeWithTree(dir);
  assert.equal(tc(['gc', '--grace', '0'], store).code, 0); // makes locks/
  const outside = canary(dir);
  const co = join(dir, 'co');
  const pin = join(store, 'locks', `checkout-${createHash('sha256').update(co).digest('hex')}.lock`);
  const cases: [string, string, string[][]][] = [
    // gc's own lock: gc takes it, snapshot and checkout look at it.
    ['gc.lock', join(store, 'locks', 'gc.lock'), [['gc', '--grace', '0'], ['snapshot', join(dir, 'src'), '--ref', 'r2'], ['checkout', 'r', co]]],
    // Another command's lock, which gc reads (and removes when stale).
    ['a writer lock', join(store, 'locks', 'writer-1-cafe.lock'), [['gc', '--grace', '0']]],
    // A checkout's pin, at the name the checkout into `co` takes.
    ['a checkout pin', pin, [['checkout', 'r', co], ['gc', '--grace', '0']]],
  ];
  for (const [name, link, commands] of cases) {
    for (const [what, target] of targets(outside)) {
      fs.symlinkSync(target, link);
      const before = contents(outside);
      for (const args of commands) damagedAt(tc(args, store), link, `${args[0]} with ${name} linked to ${what}`);
      assert.equal(fs.existsSync(join(store, 'refs', 'r2')), false, 'snapshot recorded nothing');
      assert.equal(fs.existsSync(co), false, 'checkout wrote nothing');
      untouched(outside, before, `${name} linked to ${what}`);
      verifyFindsAndRepairs(store, link, outside);
    }
  }
  assert.equal(tc(['checkout', 'r', co], store).code, 0, 'a checkout works again once repaired');
});

test('a stat cache entry or stat-cache/ folder that is a symlink is never read (snapshot fails naming it) nor written through', () => {
  const dir = tempDir();
  const { store, tree } = storeWithTree(dir);
  const src = join(dir, 'src');
  const entryName = createHash('sha256').update(src).digest('hex');
  // A real cache of this root, copied outside: followed, a snapshot would trust it.
  const outside = canary(dir);
  fs.copyFileSync(join(store, 'stat-cache', entryName), join(outside, entryName));
  const entry = join(store, 'stat-cache', entryName);
  const folder = join(store, 'stat-cache');
  refusedAtEachLink(store, entry, outside, 'snapshot, entry', () => tc(['snapshot', src, '--ref', 'r2'], store), {
    plant: () => fs.rmSync(entry),
    then: () => assert.equal(tc(['snapshot', src], store).code, 0, 'a snapshot writes the entry again once repaired'),
  });
  fs.rmSync(folder, { recursive: true });
  refusedAtEachLink(store, folder, outside, 'snapshot, folder', () => tc(['snapshot', src, '--ref', 'r2'], store));
  assert.equal(fs.existsSync(join(store, 'refs', 'r2')), false, 'no snapshot recorded anything');

  // The save: a link planted as the folder after the load (another process) is refused, not written into.
  const local = new LocalStore(store);
  const cache = StatCache.load(local, src, '[]');
  fs.symlinkSync(outside, folder);
  const before = contents(outside);
  assert.throws(() => cache.save([], parseDigest(tree), Date.now(), local.tmpPath('cache')), (e: unknown) => e instanceof StoreDamagedError && e.path === folder);
  untouched(outside, before, 'save');
  assert.deepEqual(fs.readdirSync(join(store, 'tmp')), [], 'its temp file is removed');
});

test('a completeness record or complete/ folder that is a symlink is never read (pull fails naming it) nor written through', () => {
  const dir = tempDir();
  const { store, tree } = storeWithTree(dir);
  const root = parseDigest(tree);
  const state = '0'.repeat(64);
  const outside = canary(dir, { [root.hash]: JSON.stringify({ state, directories: 2, files: 2 }) });
  const folder = join(store, 'complete');
  const entry = join(folder, root.hash);
  // No server listens here: a pull that found no record would fail to connect (exit 8).
  const pull = () => tc(['pull', tree, 'http://127.0.0.1:9/'], store);
  fs.mkdirSync(folder);
  refusedAtEachLink(store, entry, outside, 'pull, record', pull);
  fs.rmdirSync(folder);
  refusedAtEachLink(store, folder, outside, 'pull, folder', pull);
  assert.equal(pull().code, 8, 'with the link gone the pull goes to the (absent) server');

  // The write at the end of a pull: a link planted as the folder meanwhile is refused, not written into.
  for (const [what, target] of targets(outside)) {
    fs.symlinkSync(target, folder);
    const before = contents(outside);
    assert.throws(() => markComplete(store, root, { state, directories: 2, files: 2 }), (e: unknown) => e instanceof StoreDamagedError && e.path === folder, what);
    untouched(outside, before, `markComplete, folder linked to ${what}`);
    fs.unlinkSync(folder);
  }
  // A link planted at the temp name the record is written to first: never written through (only the link is removed).
  fs.mkdirSync(folder);
  const tmpLink = join(folder, `.tmp-${process.pid}-${root.hash}`);
  for (const [what, target] of targets(outside)) {
    fs.symlinkSync(target, tmpLink);
    const before = contents(outside);
    markComplete(store, root, { state, directories: 2, files: 2 });
    untouched(outside, before, `markComplete, temp name linked to ${what}`);
    assert.equal(fs.lstatSync(tmpLink, { throwIfNoEntry: false }), undefined, 'the link itself is removed');
  }
});

test('a blob file or blob shard folder that is a symlink is reported as ERR_TREECAST_STORE_DAMAGED by checkout, blob get, pack and verify; serve answers 404', async () => {
  const dir = tempDir();
  const { text, store, tree } = storeWithBlobApart(dir, 'linked blob content');
  const d = digestOf(Buffer.from(text));
  const local = new LocalStore(store);
  const blob = local.blobPath(d.hash);
  const shard = join(blob, '..');
  // The canary holds the blob's very bytes: a read through the link would pass the hash check.
  const outside = canary(dir, { [d.hash]: text });
  const check = async (link: string, what: string) => {
    const before = contents(outside);
    for (const method of ['copy', 'hardlink']) {
      const out = join(dir, `co-${method}`);
      damagedAt(tc(['checkout', tree, out, '--method', method], store), link, `checkout --method ${method}, ${what}`);
      assert.equal(fs.lstatSync(join(out, 'a'), { throwIfNoEntry: false }), undefined, `${method}: nothing written from the link`);
    }
    damagedAt(tc(['blob', 'get', `${d.hash}/${d.size}`], store), link, `blob get, ${what}`);
    for (const out of ['out.zip', 'out.tar']) {
      damagedAt(tc(['pack', tree, join(dir, out)], store), link, `pack ${out}, ${what}`);
      assert.equal(fs.existsSync(join(dir, out)), false, 'no archive written');
    }
    const server = await serve(store);
    try {
      for (const method of ['GET', 'HEAD']) {
        const r = await fetch(`${server.url}cas/${d.hash}`, { method });
        const body = Buffer.from(await r.arrayBuffer());
        assert.equal(r.status, 404, `${method} ${what}: ${body}`);
        assert.ok(!body.includes(text), 'the target is not sent');
      }
    } finally {
      await server.stop();
    }
    untouched(outside, before, what);
    verifyFindsAndRepairs(store, link, outside);
  };
  // The blob's own name a link (to the canary with the right bytes, to a folder, dangling).
  for (const [what, target] of targets(outside)) {
    fs.rmSync(blob, { force: true });
    fs.symlinkSync(target === join(outside, 'canary') ? join(outside, d.hash) : target, blob);
    await check(blob, `blob linked to ${what}`);
  }
  // The shard folder a link (to a folder holding the right blob, to a file, dangling).
  fs.rmSync(shard, { recursive: true, force: true });
  for (const [what, target] of targets(outside)) {
    fs.symlinkSync(target, shard);
    await check(shard, `shard linked to ${what}`);
  }
});

test('a new blob is never written through a blob shard folder or a cas/ folder that is a symlink: snapshot fails naming it', () => {
  const dir = tempDir();
  const { store } = storeWithTree(dir);
  const outside = canary(dir);
  const local = new LocalStore(store);
  let n = 0;
  // A file whose blob is new to the store, in the shard or cas/ folder `link` stands for.
  const snapshotThrough = (link: string, what: string) => {
    const text = `new content ${n++}`;
    writeTree(join(dir, `src${n}`), { f: text });
    const before = contents(outside);
    damagedAt(tc(['snapshot', join(dir, `src${n}`)], store), link, `snapshot, ${what}`);
    untouched(outside, before, what);
  };
  const shardOf = (i: number) => join(local.blobPath(digestOf(Buffer.from(`new content ${i}`)).hash), '..');
  for (const [what, target] of targets(outside)) {
    const shard = shardOf(n);
    fs.rmSync(shard, { recursive: true, force: true });
    fs.symlinkSync(target, shard);
    snapshotThrough(shard, `shard linked to ${what}`);
    fs.rmSync(shard);
  }
  // cas/ itself a link to a copy of it: every shard behind it would be outside the store.
  const cas = join(store, 'cas');
  const moved = join(outside, 'cas-copy');
  fs.cpSync(cas, moved, { recursive: true });
  fs.rmSync(cas, { recursive: true });
  fs.symlinkSync(moved, cas);
  snapshotThrough(cas, 'cas/ linked to a copy of it');
});

test('a blob behind a blob shard folder or cas/ that is a symlink is never counted as held: snapshot and pull fail naming the link, serve answers it absent', async () => {
  const dir = tempDir();
  const { store, tree } = storeWithTree(dir);
  const text = 'held only outside the store';
  const d = digestOf(Buffer.from(text));
  const local = new LocalStore(store);
  const shard = join(local.blobPath(d.hash), '..');
  // The canary folder holds the blob's very bytes under its name: a presence check through the link finds it.
  const outside = canary(dir, { [d.hash]: text });
  const src = join(dir, 'src2');
  writeTree(src, { f: text });
  const noRef = () => assert.equal(fs.existsSync(join(store, 'refs', 'r2')), false, 'snapshot recorded nothing');
  refusedAtEachLink(store, shard, outside, 'snapshot, shard', () => tc(['snapshot', src, '--ref', 'r2'], store), {
    plant: () => fs.rmSync(shard, { recursive: true, force: true }),
    then: noRef,
  });

  // The server's /missing (what push asks) answers such a blob absent, as its GET answers 404.
  fs.rmSync(shard, { recursive: true, force: true });
  fs.symlinkSync(outside, shard);
  const server = await serve(store);
  try {
    const r = await fetch(`${server.url}treecast/v1/missing`, { method: 'POST', body: encodeDigestList([d]) });
    assert.equal(r.status, 200);
    assert.deepEqual(decodeDigestList(Buffer.from(await r.arrayBuffer())), [d], '/missing lists the blob behind the link as absent');
  } finally {
    await server.stop();
  }
  fs.unlinkSync(shard);

  // cas/ itself a link to a copy of it that holds the blob.
  const cas = join(store, 'cas');
  const copy = join(outside, 'cas-copy');
  fs.cpSync(cas, copy, { recursive: true });
  fs.mkdirSync(join(copy, d.hash.slice(0, 2)), { recursive: true });
  fs.writeFileSync(join(copy, d.hash.slice(0, 2), d.hash), text);
  fs.rmSync(cas, { recursive: true });
  fs.symlinkSync(copy, cas);
  damagedAt(tc(['snapshot', src, '--ref', 'r2'], store), cas, 'snapshot, cas/ linked to a copy holding the blob');
  noRef();
  fs.unlinkSync(cas);
  fs.renameSync(copy, cas);

  // pull into a store whose shard of the tree's blob is a link to a folder holding it: with no
  // completeness record (the blobs looked up one by one), then with one taken while cas/ was real.
  const other = join(dir, 'other');
  assert.equal(tc(['snapshot', src, '--ref', 'r2'], other).code, 0);
  const tree2 = tc(['refs'], other).out.match(/[0-9a-f]{64}\/\d+/)![0];
  const remote = await serve(other);
  try {
    fs.rmSync(shard, { recursive: true, force: true });
    fs.symlinkSync(outside, shard);
    damagedAt(tc(['pull', tree2, remote.url], store), shard, 'pull, shard linked to a folder holding the blob');
    fs.unlinkSync(shard);
    const first = tc(['pull', tree2, remote.url], store);
    assert.equal(first.code, 0, first.err);
    assert.ok(fs.existsSync(join(store, 'complete', parseDigest(tree2).hash)), 'the pull recorded the tree whole');
    const moved = join(dir, 'cas-moved');
    fs.renameSync(cas, moved);
    fs.symlinkSync(moved, cas);
    damagedAt(tc(['pull', tree2, remote.url], store), cas, 'pull again, cas/ linked to the folder it was');
    fs.unlinkSync(cas);
    fs.renameSync(moved, cas);
    assert.equal(tc(['pull', tree2, remote.url], store).code, 0, 'a pull works again once cas/ is a folder');
  } finally {
    await remote.stop();
  }
  assert.equal(tc(['checkout', tree, join(dir, 'co')], store).code, 0, 'the store is whole again');
});

test('an action cache entry whose output Tree lies behind a blob shard folder that is a symlink is a miss to serve and a bad tree to gc, never a failure', async () => {
  const dir = tempDir();
  const { store } = storeWithTree(dir);
  const local = new LocalStore(store);
  const used = new Set(fs.readdirSync(join(store, 'cas')));
  let text = '';
  for (let i = 0; text === '' || used.has(digestOf(Buffer.from(text)).hash.slice(0, 2)); i++) text = `a Tree message held only outside ${i}`;
  const td = digestOf(Buffer.from(text));
  // A blob only this entry names (its stdout): gc must still keep it, as for an entry whose Tree is held but unreadable.
  const stdout = local.putSync(Buffer.from('the stdout only the entry names'));
  assert.notEqual(stdout.hash.slice(0, 2), td.hash.slice(0, 2));
  const key = 'ef'.padEnd(64, '5');
  fs.mkdirSync(join(store, 'ac', 'ef'), { recursive: true });
  const entry = encodeActionResult({ outputFiles: [], outputDirectories: [{ path: 'out', treeDigest: td, topologicallySorted: false }], exitCode: 0, stdoutDigest: stdout });
  fs.writeFileSync(join(store, 'ac', 'ef', key), entry);
  const outside = canary(dir, { [td.hash]: text });
  const shard = join(local.blobPath(td.hash), '..');
  fs.symlinkSync(outside, shard);
  const before = contents(outside);
  const server = await serve(store);
  try {
    for (const method of ['GET', 'HEAD']) {
      const r = await fetch(`${server.url}ac/${key}`, { method });
      const body = await r.text();
      assert.equal(r.status, 404, `${method}: ${body}`);
    }
  } finally {
    await server.stop();
  }
  const gc = tc(['gc', '--grace', '0'], store);
  assert.equal(gc.code, 0, gc.err);
  assert.ok(fs.existsSync(local.blobPath(stdout.hash)), 'gc kept the blob the entry names');
  untouched(outside, before, 'serve and gc');
});

/**
 * What a blob's own name in the store (cas/XX/HASH) is planted as in the tests below, and what the
 * error calls it: a symlink to a file holding the blob's very bytes (a presence check through it
 * finds the right blob), to a folder, dangling; a folder; a fifo.
 */
function blobNamePlants(outside: string, hash: string): { label: string; kind: string; plant: (p: string) => void }[] {
  return [
    { label: 'a link to a file holding its bytes', kind: 'a symbolic link', plant: (p) => fs.symlinkSync(join(outside, hash), p) },
    { label: 'a link to a folder', kind: 'a symbolic link', plant: (p) => fs.symlinkSync(outside, p) },
    { label: 'a dangling link', kind: 'a symbolic link', plant: (p) => fs.symlinkSync(join(outside, 'absent'), p) },
    { label: 'a folder', kind: 'a directory', plant: (p) => fs.mkdirSync(p) },
    { label: 'a fifo', kind: 'a special file', plant: (p) => assert.equal(spawnSync('mkfifo', [p]).status, 0, 'mkfifo') },
  ];
}

/** `r` failed with exit 5, naming `path` as `kind` where the blob's file belongs. */
function damagedBlobAt(r: { code: number | null; err: string }, path: string, kind: string, what: string): void {
  assert.equal(r.code, 5, `${what}: ${r.err}`);
  assert.match(r.err, /ERR_TREECAST_STORE_DAMAGED/, what);
  assert.ok(r.err.includes(`${path} is ${kind}, not the file of blob`), `${what} names the entry: ${r.err}`);
  assert.match(r.err, /treecast verify --repair/, `${what} points to verify --repair`);
}

const damagedEntry = (path: string) => (e: unknown) => e instanceof StoreDamagedError && e.path === path;

test('a symlink, folder or fifo at a blob\'s own name is never counted as held: snapshot fails naming it, a write finding it refuses it, serve\'s /missing lists it absent', async () => {
  const dir = tempDir();
  const { store } = storeWithTree(dir);
  const text = 'held only at a planted name';
  const d = digestOf(Buffer.from(text));
  const local = new LocalStore(store);
  const blob = local.blobPath(d.hash);
  const shard = join(blob, '..');
  fs.mkdirSync(shard, { recursive: true });
  const outside = canary(dir, { [d.hash]: text });
  const src = join(dir, 'src2');
  writeTree(src, { f: text });
  for (const { label, kind, plant } of blobNamePlants(outside, d.hash)) {
    plant(blob);
    const before = contents(outside);
    damagedBlobAt(tc(['snapshot', src, '--ref', 'r2'], store), blob, kind, `snapshot, ${label}`);
    assert.equal(fs.existsSync(join(store, 'refs', 'r2')), false, 'snapshot recorded nothing');
    assert.throws(() => local.hasSync(d), damagedEntry(blob), `hasSync, ${label}`);
    // A write that asked nothing first (putNewSync: an import into a store that held no blobs; or
    // the entry planted after hasSync looked) finds the name taken: refused, its temp file removed.
    assert.throws(() => local.putNewSync(Buffer.from(text)), damagedEntry(blob), `putNewSync, ${label}`);
    assert.deepEqual(fs.readdirSync(shard).filter((n) => n.startsWith('.tmp-')), [], `putNewSync, ${label}: no temp file left`);
    // What a pull looks at before it records the tree whole, one by one and by a listing.
    for (const list of [false, true]) await assert.rejects(settledStateHolding(store, [d], list), damagedEntry(blob), `completeness look (list ${list}), ${label}`);
    const server = await serve(store);
    try {
      const r = await fetch(`${server.url}treecast/v1/missing`, { method: 'POST', body: encodeDigestList([d]) });
      assert.equal(r.status, 200);
      assert.deepEqual(decodeDigestList(Buffer.from(await r.arrayBuffer())), [d], `/missing lists the blob absent, ${label}`);
    } finally {
      await server.stop();
    }
    untouched(outside, before, label);
    if (kind === 'a symbolic link') verifyFindsAndRepairs(store, blob, outside);
    else fs.rmSync(blob, { recursive: true });
  }
  assert.equal(tc(['snapshot', src, '--ref', 'r2'], store).code, 0, 'with the entry gone the snapshot stores the blob');
  assert.ok(fs.lstatSync(blob).isFile(), 'the blob is a file of the store now');
  assert.equal(local.hasSync(d), true);
});

test('pull fails naming a symlink, folder or fifo at a blob\'s own name, looked up one by one or in a listing of the store, with or without a completeness record', async () => {
  const dir = tempDir();
  const text = 'the blob planted on the pulling side';
  const d = digestOf(Buffer.from(text));
  const other = join(dir, 'other');
  const snap = (files: Record<string, string>, name: string) => {
    writeTree(join(dir, name), files);
    const r = tc(['snapshot', join(dir, name)], other);
    assert.equal(r.code, 0, r.err);
    return r.out.trim().split('\n').pop()!;
  };
  // Under 4,096 files a pull looks each blob up; once its walk has found more, into a store with
  // few blobs, it lists the store: the planted blob lies a level below the 4,200 others, so it is
  // looked up in that listing (which names it), and only the pull's completeness look can tell.
  const many: Record<string, string> = { 'zz/deeper/f': text };
  for (let i = 0; i < 4200; i++) many[`d${i % 20}/f${i}`] = `file ${i}`;
  const trees: [string, string][] = [
    ['looked up one by one', snap({ f: text, g: 'another file' }, 'small')],
    ['in a listing of the store', snap(many, 'many')],
  ];
  const outside = canary(dir, { [d.hash]: text });
  const remote = await serve(other);
  let n = 0;
  try {
    for (const [how, tree] of trees) {
      // One store per tree: after the first whole pull, the others fetch only the planted blob.
      const store = join(dir, `s${n++}`);
      const local = LocalStore.open(store);
      const blob = local.blobPath(d.hash);
      const record = join(store, 'complete', parseDigest(tree).hash);
      fs.mkdirSync(join(blob, '..'), { recursive: true });
      fs.mkdirSync(join(store, 'cas', '7f'), { recursive: true }); // the shard a pull sizes the store by
      for (const { label, kind, plant } of blobNamePlants(outside, d.hash)) {
        const before = contents(outside);
        // No record: the entry was there before the pull.
        fs.rmSync(record, { force: true });
        plant(blob);
        damagedBlobAt(tc(['pull', tree, remote.url], store), blob, kind, `pull, ${how}, ${label}`);
        assert.equal(fs.existsSync(record), false, `pull, ${how}, ${label}: the tree is not recorded whole`);
        // A record taken while the store was whole, then the blob's file replaced by the entry.
        fs.rmSync(blob, { recursive: true });
        const whole = tc(['pull', tree, remote.url], store);
        assert.equal(whole.code, 0, whole.err);
        assert.ok(fs.existsSync(record), 'the whole pull recorded the tree');
        fs.rmSync(blob);
        plant(blob);
        damagedBlobAt(tc(['pull', tree, remote.url], store), blob, kind, `pull again, ${how}, ${label}`);
        untouched(outside, before, `pull, ${how}, ${label}`);
        fs.rmSync(blob, { recursive: true });
      }
    }
  } finally {
    await remote.stop();
  }
});
