/**
 * Server memory under load: `treecast serve` (a child process, default options) takes 300 slow
 * uploads of 4 MiB blobs while 300 more connections send all but the last byte of a 4 MiB body
 * and stall. Its resident memory is sampled from /proc/PID/status throughout (VmRSS, and VmHWM at
 * the end); every upload that completed is read back over HTTP and its SHA-256 checked.
 *
 * 600 connections are more than the default `--max-connections 512`: the stalled ones connect
 * first, so some uploads are answered 503 and retry after `Retry-After`, as a client should. The
 * stalled connections are cut by the server's 30 s stall timeout (408). All traffic is loopback,
 * and the whole run is bounded in time (RUN_LIMIT_MS).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BenchContext } from './harness.js';
import { target, treecastPeaks } from './harness.js';
import { serve, stop } from './remote.js';

const UPLOADERS = 300;
const STALLED = 300;
const BLOB_BYTES = 4 << 20;
const CHUNK = 64 << 10;
/** One chunk per client every this many ms: 4 MiB in about 6.4 s, 190 MB/s over all uploaders. */
const PACE_MS = 100;
const RSS_LIMIT_MB = 200;
const RUN_LIMIT_MS = 180_000;

/** Per client, a 64 KiB pattern unique to it (made once: filling chunks byte by byte starved the client of CPU). */
const patterns = new Map<number, Buffer>();

/** Chunk `i` of client `c`'s blob: the client's pattern with `i` in its first bytes. Regenerated, never kept. */
function chunkOf(c: number, i: number): Buffer {
  let pattern = patterns.get(c);
  if (!pattern) {
    const seed = createHash('sha256').update(`client ${c}`).digest();
    pattern = Buffer.allocUnsafe(CHUNK);
    for (let o = 0; o < CHUNK; o += seed.length) seed.copy(pattern, o);
    patterns.set(c, pattern);
  }
  const chunk = Buffer.from(pattern);
  chunk.writeUInt32LE(i, 0);
  return chunk;
}

function hashOf(c: number): string {
  const h = createHash('sha256');
  for (let i = 0; i < BLOB_BYTES / CHUNK; i++) h.update(chunkOf(c, i));
  return h.digest('hex');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The server's /status, or undefined while it refuses connections (all taken). */
async function serverStatus(url: string): Promise<{ connections: number; maxConnectionsOpen: number; refusedConnections: number } | undefined> {
  try {
    const r = await fetch(`${url}status`, { headers: { connection: 'close' } });
    if (r.status === 200) return (await r.json()) as { connections: number; maxConnectionsOpen: number; refusedConnections: number };
    await r.arrayBuffer();
  } catch {
    /* refused and cut: all connections taken */
  }
  return undefined;
}

function memory(pid: number): { rss: number; hwm: number } {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? 0);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

/** Opens a connection, sends `head`, then calls `body(sock)`; resolves with the status line's code (0: none). */
function exchange(port: number, head: string, body: (sock: net.Socket) => Promise<void>): Promise<{ status: number; retryAfter?: number }> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let text = '';
    let closed = false;
    sock.on('data', (c) => {
      text += c.toString('latin1');
      // An early answer (503, 408) ends the exchange: stop sending.
      if (/\r\n\r\n/.test(text)) sock.destroy();
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      closed = true;
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      const ra = /\r\nretry-after: (\d+)\r\n/i.exec(text);
      resolve({ status: m ? Number(m[1]) : 0, ...(ra ? { retryAfter: Number(ra[1]) } : {}) });
    });
    sock.on('connect', () => {
      sock.write(head);
      void body(sock).then(() => {
        if (!closed) sock.end();
      });
    });
  });
}

async function writePaced(sock: net.Socket, c: number): Promise<void> {
  for (let i = 0; i < BLOB_BYTES / CHUNK; i++) {
    if (sock.destroyed) return;
    if (!sock.write(chunkOf(c, i))) await new Promise((r) => sock.once('drain', r));
    await sleep(PACE_MS);
  }
}

export async function run(ctx: BenchContext): Promise<string> {
  // On disk, not tmpfs: the 2.4 GB of uploads must not take memory from the machine being measured.
  const base = fs.mkdtempSync(join(tmpdir(), 'tc-server-load-'));
  const { url, child } = await serve(ctx, ['--store', join(base, 'store')]);
  const port = Number(new URL(url).port);
  const pid = child.pid!;
  const out: string[] = [];
  try {
    await sleep(500);
    const idle = memory(pid);
    let peakRss = idle.rss;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peakRss = Math.max(peakRss, memory(pid).rss);
        await sleep(100);
      }
    })();
    const t0 = performance.now();
    const deadline = t0 + RUN_LIMIT_MS;
    const hashes = Array.from({ length: UPLOADERS }, (_, c) => hashOf(c));

    ctx.log(`server-load: ${STALLED} stalled connections, then ${UPLOADERS} slow uploads of ${BLOB_BYTES >> 20} MiB`);
    const stalledAnswers: Promise<{ status: number }>[] = [];
    const almost = Buffer.alloc(BLOB_BYTES - 1, 0x5a);
    for (let s = 0; s < STALLED; s++) {
      const hash = createHash('sha256').update(`stalled ${s}`).digest('hex');
      stalledAnswers.push(
        exchange(port, `PUT /cas/${hash} HTTP/1.1\r\nHost: x\r\nContent-Length: ${BLOB_BYTES}\r\n\r\n`, async (sock) => {
          sock.write(almost);
          // Never sends the last byte: the server must cut it (408) or the run's end does.
          await new Promise<void>((r) => {
            sock.once('close', () => r());
            setTimeout(r, RUN_LIMIT_MS).unref();
          });
        }),
      );
    }
    // Uploads start once the server holds the stalled connections (it may take a while to read their bodies).
    let held = 0;
    for (let i = 0; i < 300 && held < STALLED; i++) {
      await sleep(100);
      held = (await serverStatus(url))?.connections ?? held;
    }
    ctx.log(`server-load: ${held} connections open; starting the uploads`);

    let refused = 0;
    const upload = async (c: number): Promise<boolean> => {
      while (performance.now() < deadline) {
        const r = await exchange(port, `PUT /cas/${hashes[c]} HTTP/1.1\r\nHost: x\r\nContent-Length: ${BLOB_BYTES}\r\nConnection: close\r\n\r\n`, (sock) => writePaced(sock, c));
        if (r.status === 200) return true;
        if (r.status !== 503) throw new Error(`upload ${c}: unexpected answer ${r.status}`);
        refused++;
        await sleep((r.retryAfter ?? 1) * 1000);
      }
      return false;
    };
    const results = await Promise.all(Array.from({ length: UPLOADERS }, (_, c) => upload(c)));
    const uploadSeconds = (performance.now() - t0) / 1000;
    const stalledStatuses = await Promise.all(stalledAnswers);
    sampling = false;
    await sampler;
    const final = memory(pid);

    ctx.log('server-load: reading back every completed upload');
    let verified = 0;
    for (let c = 0; c < UPLOADERS; c++) {
      if (!results[c]) continue;
      const res = await fetch(`${url}cas/${hashes[c]}`);
      const got = createHash('sha256').update(Buffer.from(await res.arrayBuffer())).digest('hex');
      if (res.status === 200 && got === hashes[c]) verified++;
    }
    const completed = results.filter(Boolean).length;
    const cut = stalledStatuses.filter((s) => s.status === 408).length;
    const status = (await serverStatus(url))!;
    const hwm = Math.max(final.hwm, peakRss);
    const leftover = fs.readdirSync(join(base, 'store', 'tmp')).length;
    // In the section's peak-memory table beside every other treecast command.
    treecastPeaks.set('server-load serve', { section: 'server-load', label: 'serve, under this load', peakMB: hwm });

    out.push(
      '## Server memory under load',
      '',
      `\`treecast serve\` with default options (\`--max-connections 512\`): ${STALLED} connections each send ${BLOB_BYTES} - 1 bytes of a ` +
        `${BLOB_BYTES}-byte PUT and stall, then ${UPLOADERS} clients each upload a distinct ${BLOB_BYTES >> 20} MiB blob at ` +
        `${CHUNK >> 10} KiB per ${PACE_MS} ms, retrying after \`Retry-After\` when refused. Resident memory of the server ` +
        'process from /proc/PID/status, sampled every 100 ms (VmHWM at the end). Loopback, one run, store on disk (bench/server-load.ts).',
      '',
      '| measure | value |',
      '|---|---|',
      `| server RSS idle, MB | ${idle.rss.toFixed(0)} |`,
      `| server peak RSS (VmHWM), MB | ${hwm.toFixed(0)} |`,
      `| server RSS after the load, MB | ${final.rss.toFixed(0)} |`,
      `| uploads completed / verified by GET and SHA-256 | ${completed} / ${verified} of ${UPLOADERS} |`,
      `| most connections open at once (server's /status) | ${status.maxConnectionsOpen} |`,
      `| connections refused with 503 (then retried) | ${status.refusedConnections} (uploads retried ${refused} times) |`,
      `| stalled uploads cut with 408 | ${cut} of ${STALLED} |`,
      `| temp files left in the store | ${leftover} |`,
      `| time until every upload finished, s | ${uploadSeconds.toFixed(1)} |`,
      '',
      target('server peak RSS (MB) under 300 slow uploads + 300 stalled', hwm, RSS_LIMIT_MB),
      target('uploads completed and verified (of 300)', verified, UPLOADERS, '>='),
    );
  } finally {
    await stop(child);
    fs.rmSync(base, { recursive: true, force: true });
  }
  return out.join('\n');
}
