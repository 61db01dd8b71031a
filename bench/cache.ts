/**
 * The CI cache job on the Linux tree, over loopback: `push DIR URL --ref NAME` saves it, then
 * `checkout NAME DIR --remote URL` restores it into an empty store and directory, against a
 * treecast server (batch endpoints) and nginx (WebDAV, one request per blob), beside `rsync -a`
 * from an rsync daemon into an empty directory, the same tree by digest (what the name costs), and
 * the restore by name with `--direct` (each file written once, no store kept).
 * Also the requests each restore made.
 *
 * Servers run as child processes (the harness times commands with spawnSync, which blocks this
 * process's event loop).
 */
import * as fs from 'node:fs';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { type BenchContext, type Case, median, table, target, timeCases, timeOnce } from './harness.js';
import { serve, startRsyncDaemon, stop } from './remote.js';
import { findNginx, startNginx } from '../test/helpers/remote-nginx.js';

const RSYNC_PORT = 18874;

function sh(cmd: string): string {
  const r = spawnSync('bash', ['-c', cmd], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`failed (${r.status}): ${cmd}\n${r.stderr}`);
  return r.stdout;
}

/** The JSON line a --json command printed last. */
function lastJson(out: string): Record<string, unknown> {
  return JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
}

export async function run(ctx: BenchContext): Promise<string> {
  const base = join(ctx.tmpfs, 'cache');
  fs.mkdirSync(base, { recursive: true });
  const tc = `node ${ctx.treecast}`;
  const children: ChildProcess[] = [];
  let nginxStop: (() => Promise<void>) | undefined;
  const out: string[] = ['## CI cache: save by name, restore by name on an empty store (Linux tree, loopback, tmpfs)', ''];
  try {
    const nginxBin = findNginx();
    if (!nginxBin) throw new Error('nginx is not installed (apt-get install nginx-light)');
    const local = join(base, 'local');
    ctx.log('cache: snapshotting the corpus');
    sh(`${tc} snapshot ${ctx.corpus} --store ${local}`);
    const srv = await serve(ctx, ['--store', join(base, 'server')]);
    children.push(srv.child);
    const nginx = await startNginx(nginxBin, join(base, 'nginx'));
    nginxStop = nginx.stop;

    // Save: one push --ref to each empty server (timed once; a second push would send nothing).
    const name = 'linux-6.1';
    const saves: string[] = ['| save | s | blobs sent | requests |', '|---|---|---|---|'];
    for (const [label, url] of [['treecast server', srv.url], ['nginx WebDAV', nginx.url]] as const) {
      const [wall] = timeOnce(`${tc} push ${ctx.corpus} ${url} --ref ${name} --store ${local} --json > ${join(base, 'push.json')}`);
      const j = lastJson(fs.readFileSync(join(base, 'push.json'), 'utf8'));
      saves.push(`| \`push DIR URL --ref NAME\` (${label}) | ${wall.toFixed(3)} | ${j.uploaded} | ${j.requests} |`);
    }
    out.push(...saves, '');

    children.push(await startRsyncDaemon(base, ctx.corpus, RSYNC_PORT));

    const store = join(base, 'restore-store');
    const dst = join(base, 'restore-out');
    const clean = `rm -rf ${store} ${dst}`;
    const restore = (url: string) => `${tc} checkout ${name} ${dst} --remote ${url} --store ${store}`;
    // The same tree by its digest, for what resolving the name costs (the lookup and its checks).
    const digest = sh(`${tc} refs --remote ${srv.url} ${name}`).trim().split(' ')[0]!;
    const cases: Case[] = [
      { label: 'rsync -a from rsync daemon', setup: clean, cmd: `rsync -a rsync://127.0.0.1:${RSYNC_PORT}/corpus/ ${dst}/` },
      { label: 'treecast checkout NAME --remote (treecast server)', setup: clean, cmd: restore(srv.url) },
      { label: 'treecast checkout NAME --remote (nginx WebDAV)', setup: clean, cmd: restore(nginx.url) },
      { label: 'treecast checkout DIGEST --remote (treecast server)', setup: clean, cmd: `${tc} checkout ${digest} ${dst} --remote ${srv.url} --store ${store}` },
      // The CI restore's one-write path: an empty directory, no store kept.
      { label: 'treecast checkout NAME --remote --direct (treecast server)', setup: clean, cmd: `${restore(srv.url)} --direct` },
    ];
    const res = timeCases(cases, ctx.runs, ctx.log);
    out.push(table(res, cases[0]!.label), '');

    // Requests per restore, from the client's own counters (one more run of each, untimed).
    for (const [label, url] of [['treecast server', srv.url], ['nginx WebDAV', nginx.url]] as const) {
      sh(clean);
      const j = lastJson(sh(`${restore(url)} --json`));
      const remote = j.remote as { requests: number; fetched: number; files: number; directories: number };
      out.push(`- restore from ${label}: ${remote.requests} requests for ${remote.files} distinct file blobs and ${remote.directories} directories (${remote.fetched} blobs fetched)`);
    }
    const rs = median(res.get(cases[0]!.label)!.wall);
    out.push(target('checkout NAME --remote (treecast server) / rsync -a', median(res.get(cases[1]!.label)!.wall) / rs, 1.0));
    out.push(target('checkout NAME --remote (nginx WebDAV) / rsync -a', median(res.get(cases[2]!.label)!.wall) / rs, 2.0));
    out.push(target('checkout NAME --remote --direct (treecast server) / rsync -a', median(res.get(cases[4]!.label)!.wall) / rs, 1.0));
    const byName = median(res.get(cases[1]!.label)!.wall) / median(res.get(cases[3]!.label)!.wall);
    out.push(`- checkout NAME / checkout DIGEST (treecast server): ${byName.toFixed(3)}`);
    out.push('');
  } finally {
    for (const c of children) await stop(c);
    await nginxStop?.();
    fs.rmSync(base, { recursive: true, force: true });
  }
  return out.join('\n');
}
