/**
 * `treecast serve` end to end, as a user starts it: --token-file, --read-only, --max-blob-size,
 * --max-connections, --access-log, --no-ac-validation, and a clean stop on SIGTERM and SIGINT.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { digestOf } from '../src/core/digest.js';
import { execFileSync } from 'node:child_process';
import { LocalStore } from '../src/store/local.js';
import { removeDir, runCli, startCli, tempDir, waitExit } from './helpers/remote.js';
import { canMount, withTmpfs } from './helpers/mounts.js';

type Child = ReturnType<typeof startCli>;

/** Starts `serve --json` on a free port; resolves with the child and its URL once it listens. */
async function serve(args: string[]): Promise<{ child: Child; url: string }> {
  const child = startCli(['serve', '--listen', '127.0.0.1:0', '--json', ...args]);
  const url = await new Promise<string>((resolve, reject) => {
    const onData = () => {
      const line = child.out.stdout.split('\n')[0]!;
      if (child.out.stdout.includes('\n')) resolve((JSON.parse(line) as { url: string }).url);
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${child.out.stderr}`)));
  });
  return { child, url };
}

async function stop(child: Child, signal: NodeJS.Signals) {
  child.kill(signal);
  return waitExit(child);
}

/** A loopback port held by a listener of the test's own: `serve` meets it in use. */
async function holdPort(): Promise<{ busy: net.Server; addr: string }> {
  const busy = net.createServer();
  busy.listen(0, '127.0.0.1');
  await new Promise((resolve) => busy.once('listening', resolve));
  return { busy, addr: `127.0.0.1:${(busy.address() as net.AddressInfo).port}` };
}

describe('serve from the command line', () => {
  let dir: string;
  before(() => {
    dir = tempDir('serve-cli');
  });
  after(() => removeDir(dir));

  test('--token-file, --max-blob-size and --access-log; SIGTERM stops it cleanly', async () => {
    const tokenFile = join(dir, 'token');
    fs.writeFileSync(tokenFile, 's3cret-token\nignored second line\n');
    const log = join(dir, 'access.log');
    const { child, url } = await serve(['--store', join(dir, 'a'), '--token-file', tokenFile, '--max-blob-size', '1K', '--access-log', log]);
    let stopped = false;
    try {
      const small = Buffer.from('fits in a kibibyte');
      const big = Buffer.alloc(2048, 1);
      const auth = { authorization: 'Bearer s3cret-token' };
      let r = await fetch(`${url}cas/${digestOf(small).hash}`, { method: 'PUT', body: small });
      assert.equal(r.status, 401, 'no token');
      await r.arrayBuffer();
      r = await fetch(`${url}cas/${digestOf(small).hash}`, { method: 'PUT', body: small, headers: { authorization: 'Bearer s3cret-token-wrong' } });
      assert.equal(r.status, 401, 'wrong token');
      await r.arrayBuffer();
      r = await fetch(`${url}cas/${digestOf(small).hash}`, { method: 'PUT', body: small, headers: auth });
      assert.equal(r.status, 200, 'the first line of the token file is the token');
      r = await fetch(`${url}cas/${digestOf(big).hash}`, { method: 'PUT', body: big, headers: auth });
      assert.equal(r.status, 413, '--max-blob-size 1K');
      await r.arrayBuffer();
      r = await fetch(`${url}cas/${digestOf(small).hash}`, { headers: auth });
      assert.deepEqual(Buffer.from(await r.arrayBuffer()), small);

      const exit = await stop(child, 'SIGTERM');
      stopped = true;
      assert.equal(exit.code, 0, exit.stderr);
      const events = exit.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.equal(events.at(-1)!.event, 'stopped');
      assert.ok(!exit.stdout.includes('s3cret') && !exit.stderr.includes('s3cret'), 'the token is never printed');
      const lines = fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { method: string; status: number; path: string });
      assert.deepEqual(
        lines.map((l) => [l.method, l.status]),
        [['PUT', 401], ['PUT', 401], ['PUT', 200], ['PUT', 413], ['GET', 200]],
      );
      // The port is closed once it stopped.
      await assert.rejects(fetch(`${url}status`));
    } finally {
      if (!stopped) await stop(child, 'SIGKILL');
    }
  });

  test('--read-only refuses writes; --max-connections 1 answers a second connection 503; SIGINT stops it', async () => {
    const store = join(dir, 'ro');
    const { child, url } = await serve(['--store', store, '--read-only', '--max-connections', '1']);
    let stopped = false;
    const held = net.connect(Number(new URL(url).port), '127.0.0.1');
    held.on('error', () => {});
    try {
      await new Promise((r) => held.once('connect', r));
      await new Promise((r) => setTimeout(r, 100));
      let r = await fetch(`${url}status`, { headers: { connection: 'close' } });
      assert.equal(r.status, 503);
      assert.equal(r.headers.get('retry-after'), '1');
      await r.arrayBuffer();
      held.destroy();
      await new Promise((res) => setTimeout(res, 100));
      const body = Buffer.from('not accepted');
      r = await fetch(`${url}cas/${digestOf(body).hash}`, { method: 'PUT', body, headers: { connection: 'close' } });
      assert.equal(r.status, 405);
      await r.arrayBuffer();
      const key = digestOf(Buffer.from('key')).hash;
      r = await fetch(`${url}ac/${key}`, { method: 'PUT', body: Buffer.from([0x20, 0x01]), headers: { connection: 'close' } });
      assert.equal(r.status, 405, 'the action cache is read-only too');
      await r.arrayBuffer();
      assert.ok(!fs.existsSync(join(store, 'cas', digestOf(body).hash.slice(0, 2), digestOf(body).hash)));
      const exit = await stop(child, 'SIGINT');
      stopped = true;
      assert.equal(exit.code, 0, exit.stderr);
      assert.equal((JSON.parse(exit.stdout.trim().split('\n').at(-1)!) as { event: string }).event, 'stopped');
    } finally {
      held.destroy();
      if (!stopped) await stop(child, 'SIGKILL');
    }
  });

  test('--no-ac-validation stores any bytes; by default they are refused', async () => {
    const key = digestOf(Buffer.from('ccache key')).hash;
    const bytes = Buffer.from('ccache result, not protobuf \x13\x13');
    for (const [args, want] of [[[], 400], [['--no-ac-validation'], 200]] as [string[], number][]) {
      const { child, url } = await serve(['--store', join(dir, `ac-${want}`), ...args]);
      try {
        const r = await fetch(`${url}ccache/ac/${key}`, { method: 'PUT', body: bytes });
        assert.equal(r.status, want, args.join(' '));
        await r.arrayBuffer();
        const g = await fetch(`${url}ccache/ac/${key}`);
        assert.equal(g.status, want === 200 ? 200 : 404);
        if (want === 200) assert.deepEqual(Buffer.from(await g.arrayBuffer()), bytes);
        else await g.arrayBuffer();
      } finally {
        await stop(child, 'SIGTERM');
      }
    }
  });

  test('a client without the token is told to pass one; a client with a wrong one is told it was refused', async () => {
    const { child, url } = await serve(['--store', join(dir, 'tok'), '--token', 'right-token']);
    try {
      const none = await runCli(['refs', '--remote', url, 'main']);
      assert.equal(none.code, 8, none.stderr);
      assert.match(none.stderr, /HTTP 401\n {2}hint: pass a token with --token/, none.stderr);
      const wrong = await runCli(['refs', '--remote', url, 'main', '--token', 'wrong-token']);
      assert.equal(wrong.code, 8, wrong.stderr);
      assert.match(wrong.stderr, /HTTP 401\n {2}hint: the server refused the token given/, wrong.stderr);
      assert.ok(!wrong.stderr.includes('wrong-token') && !wrong.stderr.includes('right-token'), 'no token printed');
      const good = await runCli(['refs', '--remote', url, 'main', '--token', 'right-token']);
      assert.equal(good.code, 3, `the right token passes: ${good.stderr}`);
    } finally {
      await stop(child, 'SIGTERM');
    }
  });

  test('a port in use is a file-system error naming the address, with a hint; so is an address not this machine\'s', async () => {
    const { busy, addr } = await holdPort();
    try {
      const r = await runCli(['serve', '--listen', addr, '--store', join(dir, 'busy'), '--json']);
      assert.equal(r.code, 7, r.stderr);
      assert.match(r.stderr, new RegExp(`error\\[ERR_TREECAST_FS\\]: cannot listen on ${addr}: EADDRINUSE`), r.stderr);
      assert.match(r.stderr, /hint: another process listens there/);
      const j = JSON.parse(r.stdout) as { ok: boolean; error: { path: string } };
      assert.equal(j.error.path, addr);
    } finally {
      busy.close();
    }
    // TEST-NET-1 (RFC 5737): never an address of this machine.
    const r = await runCli(['serve', '--listen', '192.0.2.1:9', '--store', join(dir, 'busy')]);
    assert.equal(r.code, 7, r.stderr);
    assert.match(r.stderr, /cannot listen on 192\.0\.2\.1:9: EADDRNOTAVAIL/, r.stderr);
  });

  test('a start that cannot listen leaves nothing it made behind: no empty store, no empty access log; what was there stays', async () => {
    const { busy, addr } = await holdPort();
    try {
      // A store (and its parents) that did not exist, and an access log that did not.
      const fresh = join(dir, 'fresh');
      const r = await runCli(['serve', '--listen', addr, '--store', join(fresh, 'deep', 'store'), '--access-log', join(dir, 'fresh.log')]);
      assert.equal(r.code, 7, r.stderr);
      assert.equal(fs.existsSync(fresh), false, `no store folders left: ${fs.existsSync(fresh) ? fs.readdirSync(fresh, { recursive: true }).join(' ') : ''}`);
      assert.equal(fs.existsSync(join(dir, 'fresh.log')), false, 'no empty access log left');
      // An empty folder the user made as the store: kept, and left empty again.
      const mine = join(dir, 'mine');
      fs.mkdirSync(join(mine, 'notes'), { recursive: true });
      assert.equal((await runCli(['serve', '--listen', addr, '--store', mine])).code, 7);
      assert.deepEqual(fs.readdirSync(mine), ['notes']);
      // A store in use, with a blob and a ref, and a log with lines in it: untouched.
      const used = join(dir, 'used');
      const store = LocalStore.open(used);
      const d = store.putSync(Buffer.from('kept\n'));
      store.writeRef('main', d);
      const log = join(dir, 'used.log');
      fs.writeFileSync(log, '{"old":true}\n');
      const listing = fs.readdirSync(used, { recursive: true }).sort();
      assert.equal((await runCli(['serve', '--listen', addr, '--store', used, '--access-log', log])).code, 7);
      assert.deepEqual(fs.readdirSync(used, { recursive: true }).sort(), listing);
      assert.equal(fs.readFileSync(log, 'utf8'), '{"old":true}\n');
      // An access log that cannot be opened is named, and the store made for this start is gone too.
      const bad = await runCli(['serve', '--listen', '127.0.0.1:0', '--store', join(dir, 'fresh2'), '--access-log', join(dir, 'no-such-dir', 'a.log')]);
      assert.equal(bad.code, 7, bad.stderr);
      assert.match(bad.stderr, /cannot open access log .*no-such-dir\/a\.log: ENOENT/, bad.stderr);
      assert.equal(fs.existsSync(join(dir, 'fresh2')), false);
    } finally {
      busy.close();
    }
  });

  test('a store the server cannot write is refused at start (exit 7, naming it), not answered 500 on every upload; --read-only serves it', async (t) => {
    const why = canMount();
    if (why) {
      t.skip(why);
      return;
    }
    await withTmpfs('1m', async (mnt) => {
      const store = join(mnt, 'store');
      LocalStore.open(store);
      execFileSync('mount', ['-o', 'remount,ro', mnt]);
      const refused = startCli(['serve', '--listen', '127.0.0.1:0', '--store', store]);
      // A server that starts instead would run on: stopped, so the test fails rather than hangs.
      const timer = setTimeout(() => refused.kill('SIGKILL'), 10_000);
      const r = await waitExit(refused);
      clearTimeout(timer);
      assert.equal(r.code, 7, r.stderr);
      assert.match(r.stderr, new RegExp(`cannot serve ${store} for uploads: cannot write ${store}: EROFS\n {2}hint: serve it with --read-only`), r.stderr);
      const { child, url } = await serve(['--store', store, '--read-only']);
      try {
        const res = await fetch(`${url}cas/${digestOf(Buffer.from('x')).hash}`);
        assert.equal(res.status, 404);
        await res.arrayBuffer();
      } finally {
        await stop(child, 'SIGTERM');
      }
    });
  });

  test('a token file that cannot be read is a file-system error naming it, and nothing listens', async () => {
    const missing = join(dir, 'no-such-token');
    const r = await runCli(['serve', '--listen', '127.0.0.1:0', '--store', join(dir, 'x'), '--token-file', missing]);
    assert.equal(r.code, 7, r.stderr);
    assert.ok(r.stderr.includes(missing), r.stderr);
  });
});
