/**
 * Remote benchmarks: pull and checkout over loopback HTTP.
 *
 *  1. Latency hiding: with 50 ms added to every request (`treecast serve --latency 50`), pull at
 *     --concurrency 16 vs 1, on the Linux tree and on a synthetic tree of 1,000 dirs x 20 small
 *     files; the server's /status reports how many requests it really had in flight.
 *  2. Full pull + checkout of the Linux tree into an empty store and directory, against a treecast
 *     server (batch endpoints) and nginx (WebDAV, plain Bazel protocol), beside `rsync -a` from an
 *     rsync daemon on loopback into an empty directory; `--direct` writes each byte once.
 *  3. Pulling again after a complete pull.
 *
 * Servers run as child processes (the harness times commands with spawnSync, which blocks this
 * process's event loop, so nothing here can serve requests in-process).
 */
import * as http from 'node:http';
import * as fs from 'node:fs';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { type BenchContext, type Case, median, table, target, timeCases } from './harness.js';
import { findNginx, startNginx } from '../test/helpers/remote-nginx.js';

const LATENCY_MS = 50;

function sh(cmd: string): string {
  const r = spawnSync('bash', ['-c', cmd], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`failed (${r.status}): ${cmd}\n${r.stderr}`);
  return r.stdout;
}

/** Starts `treecast serve` as a child and resolves with its URL (from its --json line). */
export async function serve(ctx: BenchContext, args: string[]): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [ctx.treecast, 'serve', '--listen', '127.0.0.1:0', '--json', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (c) => {
      buf += c;
      const line = buf.split('\n')[0]!;
      if (buf.includes('\n')) resolve((JSON.parse(line) as { url: string }).url);
    });
    child.once('exit', (code) => reject(new Error(`treecast serve exited with ${code}`)));
  });
  return { url, child };
}

/** An rsync daemon on loopback serving `dir` as module `corpus` (for `rsync -a` rows). */
export async function startRsyncDaemon(base: string, dir: string, port: number): Promise<ChildProcess> {
  fs.writeFileSync(
    join(base, 'rsyncd.conf'),
    `port = ${port}\naddress = 127.0.0.1\nuse chroot = no\nlog file = ${join(base, 'rsyncd.log')}\n[corpus]\npath = ${dir}\nread only = yes\n`,
  );
  // In the foreground (--no-detach) so it is our child and we stop exactly it.
  const rsyncd = spawn('rsync', ['--daemon', '--no-detach', `--config=${join(base, 'rsyncd.conf')}`], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 500));
  return rsyncd;
}

export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await done;
}

/**
 * The server's /status on a connection of its own (`agent: false`): a keep-alive socket left from a
 * call minutes earlier may have been closed by the server, and a write into it failed with EPIPE.
 */
function status(url: string): Promise<{ maxInFlight: number; requests: number }> {
  return new Promise((resolve, reject) => {
    http
      .get(`${url}status`, { agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => {
          try {
            resolve(JSON.parse(body) as { maxInFlight: number; requests: number });
          } catch (e) {
            reject(e);
          }
        });
      })
      .on('error', reject);
  });
}

function synthetic(root: string): void {
  for (let d = 0; d < 1000; d++) {
    const dir = join(root, `d${String(d).padStart(4, '0')}`);
    fs.mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 20; f++) fs.writeFileSync(join(dir, `f${f}.txt`), `directory ${d} file ${f}\n${'.'.repeat((d * 31 + f * 17) % 900)}\n`);
  }
}

export async function run(ctx: BenchContext): Promise<string> {
  const base = join(ctx.tmpfs, 'remote');
  fs.mkdirSync(base, { recursive: true });
  const tc = `node ${ctx.treecast}`;
  const serverStore = join(base, 'server');
  const children: ChildProcess[] = [];
  let nginxStop: (() => Promise<void>) | undefined;
  // TREECAST_BENCH_REMOTE_PARTS=latency,checkout,again picks parts (default: all).
  const parts = (process.env.TREECAST_BENCH_REMOTE_PARTS ?? 'latency,checkout,again').split(',');
  const out: string[] = ['## Remote: pull and checkout over loopback HTTP', ''];
  try {
    ctx.log('remote: snapshotting the corpus and a synthetic tree into the server store');
    const linux = sh(`${tc} snapshot ${ctx.corpus} --store ${serverStore}`).trim().split('\n').pop()!;
    synthetic(join(base, 'synth'));
    const synth = sh(`${tc} snapshot ${join(base, 'synth')} --store ${serverStore}`).trim().split('\n').pop()!;

    const plainSrv = await serve(ctx, ['--store', serverStore]);
    children.push(plainSrv.child);
    const slowSrv = await serve(ctx, ['--store', serverStore, '--latency', String(LATENCY_MS)]);
    children.push(slowSrv.child);

    // ------------------------------------------------------------ 1. latency hiding
    if (parts.includes('latency')) {
      // --concurrency 1 takes 18-90 s a pull and keeps at most 2 rounds; 16 takes 2-8 s, and its two
      // rounds of the synthetic tree once ranged 1.76-1.96 s across the 10x line, so it gets 5.
      const latencyRuns = Math.max(1, Math.min(ctx.runs, 2));
      const fastRuns = Math.max(latencyRuns, 5);
      out.push(`### Pull with ${LATENCY_MS} ms added per request (server \`--latency ${LATENCY_MS}\`), batch endpoints`, '');
      out.push(`Timed runs: ${latencyRuns} at --concurrency 1, ${fastRuns} at 16, each after a warm-up.`, '');
      const ratios: string[] = [];
      for (const [name, root] of [['synthetic 1,000 dirs x 20 files', synth], ['Linux 6.1', linux]] as const) {
        const store = join(base, 'lat-store');
        const pullCase = (n: number): Case => ({
          label: `${name}: pull --concurrency ${n}`,
          setup: `rm -rf ${store}`,
          cmd: `${tc} pull ${root} ${slowSrv.url} --store ${store} --concurrency ${n}`,
        });
        const [one, sixteen] = [pullCase(1), pullCase(16)];
        const before = await status(slowSrv.url);
        const res = new Map([...timeCases([one], latencyRuns, ctx.log), ...timeCases([sixteen], fastRuns, ctx.log)]);
        // Every pull starts from an empty store, so each (warm-ups included) makes the same requests.
        const perPull = ((await status(slowSrv.url)).requests - before.requests) / (latencyRuns + 1 + fastRuns + 1);
        out.push(table(res, one.label), '');
        const speedup = median(res.get(one.label)!.wall) / median(res.get(sixteen.label)!.wall);
        ratios.push(target(`${name}: pull at --concurrency 16 is faster than at 1 by`, speedup, 10, '>='));
        // The ratio's ceiling: added latency alone is requests x 50 ms at --concurrency 1 and 1/16 of
        // that at 16; the rest of each row is the pull's own work (CPU on the client and server).
        ratios.push(
          `- ${name}: ${perPull.toFixed(0)} requests per pull; added latency alone: ${((perPull * LATENCY_MS) / 1000).toFixed(2)} s at --concurrency 1, ${((perPull * LATENCY_MS) / 16000).toFixed(2)} s at 16`,
        );
      }
      const st = await status(slowSrv.url);
      out.push(...ratios, target('server maxInFlight (from /status) during those pulls', st.maxInFlight, 16, '>='), '');
    }

    // ------------------------------------------------------------ 2. full pull + checkout vs rsync
    if (parts.includes('checkout')) {
      const nginx = findNginx();
      let nginxUrl: string | undefined;
      if (nginx) {
        const n = await startNginx(nginx, join(base, 'nginx'));
        nginxStop = n.stop;
        nginxUrl = n.url;
        ctx.log('remote: pushing the Linux tree to nginx');
        sh(`${tc} push ${linux} ${nginxUrl} --store ${serverStore}`);
      }
      children.push(await startRsyncDaemon(base, ctx.corpus, 18873));

      const store = join(base, 'co-store');
      const dst = join(base, 'co-out');
      const clean = `rm -rf ${store} ${dst}`;
      const cases: Case[] = [
        { label: 'rsync -a from rsync daemon', setup: clean, cmd: `rsync -a rsync://127.0.0.1:18873/corpus/ ${dst}/` },
        { label: 'treecast checkout --remote (treecast server)', setup: clean, cmd: `${tc} checkout ${linux} ${dst} --remote ${plainSrv.url} --store ${store}` },
        { label: 'treecast checkout --remote --method hardlink (treecast server)', setup: clean, cmd: `${tc} checkout ${linux} ${dst} --remote ${plainSrv.url} --store ${store} --method hardlink` },
        { label: 'treecast checkout --remote --direct (treecast server)', setup: clean, cmd: `${tc} checkout ${linux} ${dst} --remote ${plainSrv.url} --store ${store} --direct` },
        { label: 'treecast pull, then checkout (treecast server)', setup: clean, cmd: `${tc} pull ${linux} ${plainSrv.url} --store ${store} && ${tc} checkout ${linux} ${dst} --store ${store}` },
      ];
      if (nginxUrl) cases.push({ label: 'treecast checkout --remote (nginx WebDAV)', setup: clean, cmd: `${tc} checkout ${linux} ${dst} --remote ${nginxUrl} --store ${store}` });
      const res = timeCases(cases, ctx.runs, ctx.log);
      out.push('### Full pull + checkout of the Linux tree into an empty store and directory (loopback, tmpfs)', '');
      out.push(table(res, cases[0]!.label), '');
      const rs = median(res.get(cases[0]!.label)!.wall);
      out.push(target('checkout --remote (treecast server) / rsync -a', median(res.get(cases[1]!.label)!.wall) / rs, 1.0));
      out.push(target('checkout --remote --method hardlink (treecast server) / rsync -a', median(res.get(cases[2]!.label)!.wall) / rs, 1.0));
      out.push(target('checkout --remote --direct (treecast server) / rsync -a', median(res.get(cases[3]!.label)!.wall) / rs, 1.0));
      if (!nginxUrl) out.push('- nginx not installed: the WebDAV row was skipped');
      out.push('');
    }

    // ------------------------------------------------------------ 3. pulling again
    if (parts.includes('again')) {
      const full = join(base, 'full-store');
      sh(`rm -rf ${full}`);
      const again: Case[] = [
        { label: 'first pull (empty store)', setup: `rm -rf ${full}`, cmd: `${tc} pull ${linux} ${plainSrv.url} --store ${full}` },
        { label: 'pull again (complete store)', cmd: `${tc} pull ${linux} ${plainSrv.url} --store ${full}` },
      ];
      const res2 = timeCases(again, ctx.runs, ctx.log);
      const summary = JSON.parse(sh(`${tc} pull ${linux} ${plainSrv.url} --store ${full} --json`).trim().split('\n').pop()!) as { fetched: number; requests: number };
      out.push('### Pulling the Linux tree again after a complete pull', '', table(res2, again[0]!.label), '');
      out.push(`- the repeated pull fetched ${summary.fetched} blobs in ${summary.requests} request(s)`);
      out.push(target('pull again / first pull', median(res2.get(again[1]!.label)!.wall) / median(res2.get(again[0]!.label)!.wall), 0.05));
      out.push('');
    }
  } finally {
    for (const c of children) await stop(c);
    await nginxStop?.();
    fs.rmSync(base, { recursive: true, force: true });
  }
  return out.join('\n');
}
