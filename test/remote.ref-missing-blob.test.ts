/**
 * `checkout NAME --remote URL` against a real `treecast serve` (AC validation on, the default):
 * a name with no entry is "no entry" (ERR_TREECAST_REMOTE_REF_NOT_FOUND); a name whose entry is
 * there but whose tree reaches a blob the server lost is a missing blob, named
 * (ERR_TREECAST_BLOB_NOT_FOUND), not a name that does not exist. A Bazel client's plain GET of that
 * entry is still a miss (404), as the HTTP cache protocol has it.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { tempDir, writeTree } from './helpers/tmp.js';
import { runCli, servedUrl, startCli, waitExit } from './helpers/remote.js';
import { refKey } from '../src/remote/refs.js';
import { LocalStore } from '../src/store/local.js';

type Child = ReturnType<typeof startCli>;
const children: Child[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

test('a ref whose entry exists but whose blob the server lost names the blob; a ref with no entry says so', async () => {
  const dir = tempDir('tc-ref-blob');
  const serverStore = join(dir, 'server');
  const lost = 'this file\'s blob is evicted from the server\n';
  writeTree(join(dir, 'src'), { 'a.txt': 'kept\n', 'sub/lost.txt': lost });
  const serve = startCli(['serve', '--listen', '127.0.0.1:0', '--json', '--store', serverStore]);
  children.push(serve);
  const url = await servedUrl(serve);
  try {
    const push = await runCli(['push', join(dir, 'src'), url, '--ref', 'tools', '--store', join(dir, 'client')]);
    assert.equal(push.code, 0, push.stderr);
    const ok = await runCli(['checkout', 'tools', join(dir, 'out0'), '--remote', url, '--store', join(dir, 'c0')]);
    assert.equal(ok.code, 0, ok.stderr);

    const victim = createHash('sha256').update(lost).digest('hex');
    fs.rmSync(LocalStore.open(serverStore).blobPath(victim));
    const digest = `${victim}/${Buffer.byteLength(lost)}`;

    const out = join(dir, 'out1');
    const miss = await runCli(['checkout', 'tools', out, '--remote', url, '--store', join(dir, 'c1'), '--json']);
    assert.equal(miss.code, 3, miss.stderr);
    const err = (JSON.parse(miss.stdout.trim().split('\n').pop()!) as { error: { code: string; digest: string; message: string; tried: { reason: string; digest?: string }[] } }).error;
    assert.equal(err.code, 'ERR_TREECAST_BLOB_NOT_FOUND');
    assert.equal(err.digest, digest);
    assert.deepEqual(err.tried.map((t) => [t.reason, t.digest]), [['incomplete', digest]]);
    assert.ok(!fs.existsSync(out), 'nothing written for an incomplete tree');
    const text = await runCli(['checkout', 'tools', out, '--remote', url, '--store', join(dir, 'c2')]);
    assert.equal(text.code, 3);
    assert.match(text.stderr, new RegExp(`error\\[ERR_TREECAST_BLOB_NOT_FOUND\\]: ref 'tools' on .* names blob ${digest.replace('/', '\\/')}, which the server lacks`));
    assert.match(text.stderr, new RegExp(`tools \\(ac/${refKey('tools')}\\): entry names blob ${victim}`));
    assert.doesNotMatch(text.stderr, /no entry/);

    const none = await runCli(['checkout', 'nothing-here', out, '--remote', url, '--store', join(dir, 'c3'), '--json']);
    assert.equal(none.code, 3, none.stderr);
    const noneErr = (JSON.parse(none.stdout.trim().split('\n').pop()!) as { error: { code: string; tried: { reason: string }[] } }).error;
    assert.equal(noneErr.code, 'ERR_TREECAST_REMOTE_REF_NOT_FOUND');
    assert.deepEqual(noneErr.tried.map((t) => t.reason), ['absent']);

    // `refs --remote` tells the two apart too.
    const refs = await runCli(['refs', '--remote', url, 'tools', 'nothing-here', '--json']);
    assert.equal(refs.code, 3, refs.stderr);
    const rows = (JSON.parse(refs.stdout) as { refs: { name: string; tree: string | null; missing?: string }[] }).refs;
    assert.deepEqual(rows.map((r) => [r.name, r.tree !== null, r.missing]), [['tools', true, digest], ['nothing-here', false, undefined]]);

    // A Bazel client (no treecast header) still gets the miss for the entry whose output is gone.
    const bazel = await fetch(`${url.replace(/\/$/, '')}/ac/${refKey('tools')}`);
    assert.equal(bazel.status, 404);
    await bazel.arrayBuffer();
  } finally {
    serve.kill('SIGTERM');
    await waitExit(serve);
  }
});
