/**
 * A `checkout --remote --direct` killed (SIGKILL) while it streams a large blob into a temporary
 * file beside its target file leaves that file. Real processes: `treecast serve`, a proxy in this
 * test that passes half of the large blob's bytes and then stalls, and the CLI killed once the
 * temporary file holds bytes. The same command run again removes that file and only files named
 * with the stopped run's token: a file of the user's named like one survives; `status` names the
 * leftover as the stopped checkout's.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { describeTree, tempDir, writeTree } from './helpers/tmp.js';
import { runCli, servedUrl, startCli, waitExit } from './helpers/remote.js';

type Child = ReturnType<typeof startCli>;
const children: Child[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/** Forwards to `upstream`; a GET of /cas/<stall> gets half its body, then nothing more. */
async function stallingProxy(upstream: string, stall: string): Promise<{ url: string; close(): void }> {
  const up = new URL(upstream);
  const server = http.createServer((req, res) => {
    const fwd = http.request({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      if (!(req.method === 'GET' && req.url?.endsWith(`/cas/${stall}`))) {
        r.pipe(res);
        return;
      }
      const half = Number(r.headers['content-length']) / 2;
      let sent = 0;
      r.on('data', (c: Buffer) => {
        if (sent >= half) return r.pause();
        res.write(c);
        sent += c.length;
      });
    });
    fwd.on('error', () => res.destroy());
    req.pipe(fwd);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/**
 * A `checkout --remote --direct` of a tree with a 16 MiB file, killed while that file streams into
 * its temporary name (`sub/<temp>`), with files of the user's named like temporary files beside.
 */
async function killedWhileStreaming(dir: string): Promise<{ root: string; url: string; store: string; out: string; temp: string; mine: string[]; close(): Promise<void> }> {
  const serverStore = join(dir, 'server');
  const big = randomBytes(16 << 20);
  writeTree(join(dir, 'src'), { 'a.txt': 'small\n', 'sub/big.bin': { bytes: big }, 'sub/z.txt': 'after\n' });
  const snap = await runCli(['snapshot', join(dir, 'src'), '--store', serverStore]);
  assert.equal(snap.code, 0, snap.stderr);
  const root = snap.stdout.trim().split('\n').pop()!;
  const serve = startCli(['serve', '--listen', '127.0.0.1:0', '--json', '--store', serverStore]);
  children.push(serve);
  const url = await servedUrl(serve);
  const proxy = await stallingProxy(url, createHash('sha256').update(big).digest('hex'));
  const close = async () => {
    proxy.close();
    serve.kill('SIGTERM');
    await waitExit(serve);
  };
  try {
    const store = join(dir, 'client');
    const out = join(dir, 'out');
    const first = startCli(['checkout', root, out, '--remote', proxy.url, '--store', store, '--direct', '--jobs', '1']);
    children.push(first);
    const deadline = Date.now() + 60_000;
    let temp: string | undefined;
    while (temp === undefined && first.exitCode === null && Date.now() < deadline) {
      const names = fs.existsSync(join(out, 'sub')) ? fs.readdirSync(join(out, 'sub')) : [];
      const t = names.find((n) => n.startsWith('.treecast-') && fs.statSync(join(out, 'sub', n)).size > 0);
      if (t) temp = t;
      else await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(temp, `the checkout streamed into a temporary file (${first.out.stderr})`);
    first.kill('SIGKILL');
    assert.equal((await waitExit(first)).signal, 'SIGKILL');
    assert.ok(fs.existsSync(join(out, 'sub', temp)), 'the kill left the temporary file');
    assert.ok(!fs.existsSync(join(out, 'sub', 'big.bin')));

    // Files of the user's named like treecast's temporary files, the old way and with another token.
    const mine = ['.treecast-abc.tmp', '.treecast-0123456789abcdef-0123456789ab.tmp', 'sub/.treecast-fedcba9876543210-aaaaaaaaaaaa.tmp'];
    for (const m of mine) fs.writeFileSync(join(out, m), `mine: ${m}\n`);
    return { root, url, store, out, temp, mine, close };
  } catch (e) {
    await close();
    throw e;
  }
}

test('a killed `checkout --remote --direct` leaves its temporary file; the same command removes it, and only files with its token', async () => {
  const dir = tempDir('tc-leftovers');
  const { root, url, store, out, temp, mine, close } = await killedWhileStreaming(dir);
  try {
    const st = await runCli(['status', out, '--store', store]);
    assert.equal(st.code, 7, st.stderr);
    assert.match(st.stderr, /did not finish/);
    assert.ok(st.stderr.includes(`it left a temporary file of its own (sub/${temp})`), st.stderr);

    const again = await runCli(['checkout', root, out, '--remote', url, '--store', store, '--direct', '--jobs', '1']);
    assert.equal(again.code, 0, again.stderr);
    assert.ok(!fs.existsSync(join(out, 'sub', temp)), 'the stopped run\'s temporary file is gone');
    for (const m of mine) assert.equal(fs.readFileSync(join(out, m), 'utf8'), `mine: ${m}\n`, `${m} survives`);
    const shown = await runCli(['status', out, '--store', store, '--json']);
    assert.equal(shown.code, 0, shown.stderr);
    const s = JSON.parse(shown.stdout) as { modified: string[]; added: string[]; removed: string[] };
    assert.deepEqual([s.modified, s.added.sort(), s.removed], [[], [...mine].sort(), []], 'only the user\'s files are untracked');
    for (const m of mine) fs.rmSync(join(out, m));
    assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')));
  } finally {
    await close();
  }
});

test('a checkout of another tree into the target of a killed `checkout --remote --direct` removes that run\'s temporary file, and only files with its token', async () => {
  const dir = tempDir('tc-leftovers-other');
  const { store, out, temp, mine, close } = await killedWhileStreaming(dir);
  try {
    // Another tree, from the local store (no remote at all), with a folder the stopped tree also has.
    writeTree(join(dir, 'other'), { 'sub/other.txt': 'another tree\n' });
    const snap = await runCli(['snapshot', join(dir, 'other'), '--store', store, '--ref', 'other']);
    assert.equal(snap.code, 0, snap.stderr);
    const other = await runCli(['checkout', 'other', out, '--store', store]);
    assert.equal(other.code, 0, other.stderr);
    assert.ok(!fs.existsSync(join(out, 'sub', temp)), 'the stopped run\'s temporary file is gone');
    for (const m of mine) assert.equal(fs.readFileSync(join(out, m), 'utf8'), `mine: ${m}\n`, `${m} survives`);
    assert.equal(fs.readFileSync(join(out, 'sub', 'other.txt'), 'utf8'), 'another tree\n');
    const shown = await runCli(['status', out, '--store', store, '--json']);
    assert.equal(shown.code, 0, shown.stderr);
    const s = JSON.parse(shown.stdout) as { added: string[] };
    assert.ok(!s.added.some((a) => a.includes(temp)), `no temporary file is left untracked: ${s.added.join(', ')}`);
  } finally {
    await close();
  }
});
