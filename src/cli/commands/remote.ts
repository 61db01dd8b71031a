/**
 * `treecast serve` and `push`: the HTTP remote. Also exports the fetch progress bar and the
 * fetcher wiring that `pull` and `checkout --remote` share.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { type Digest, formatDigest, looksLikeDigest } from '../../core/digest.js';
import { snapshot } from '../../capture/snapshot.js';
import { BlobNotFoundError, ExitCode, FileSystemError, type RemoteRefMiss, UsageError, remoteRefMissError } from '../../errors.js';
import type { CheckoutOptions } from '../../materialize/checkout.js';
import { PLAIN_CACHE_SLABS } from '../../materialize/execute.js';
import { resolveServerToken } from '../../remote/auth.js';
import { RemoteClient } from '../../remote/client.js';
import { type RemoteCliOptions, addRemoteClientOptions, clientOptions, isLocalSpec } from '../remote-options.js';
import { RemoteFetcher } from '../../remote/fetch.js';
import { push } from '../../remote/push.js';
import { type PushedRef, type RefHit, lookupRef, pushRef, refKey, resolveRemoteRef } from '../../remote/refs.js';
import { RemoteServer } from '../../remote/server.js';
import { type LocalStore, checkRefName, defaultStorePath } from '../../store/local.js';
import { ServeSetup } from '../serve-setup.js';
import { addJsonOption, addStoreOption, intInRange, onSecondSignal, openStore, withSignals } from '../common.js';
import { guardStoreWriter } from '../../fs/target-guard.js';
import { formatBytes, printJson } from '../output.js';
import { ProgressBar } from '../progress.js';


/** Draws fetch progress from the client's counters until stopped. */
export function fetchProgress(fetcher: RemoteFetcher, label: string, enabled: boolean): () => void {
  const bar = new ProgressBar(enabled);
  if (!enabled) return () => {};
  const timer = setInterval(() => {
    const s = fetcher.client.stats;
    bar.update({ done: s.fetched, total: Math.max(fetcher.planned, s.fetched), bytes: s.fetchedBytes, label });
  }, 100);
  timer.unref();
  return () => {
    clearInterval(timer);
    bar.finish();
  };
}

/**
 * The hooks `checkout --remote` passes to checkout: the tree's directories first, then every blob
 * the store lacks streams in while the checkout writes the ones that have arrived.
 */

export function remoteCheckoutHooks(store: LocalStore, url: string, o: RemoteCliOptions & { method?: string }, signal: AbortSignal, showProgress: boolean, resolved?: RemoteFetcher, direct = false) {
  const fetcher = resolved ?? newFetcher(store, url, o, signal);
  let stopBar = () => {};
  return {
    fetcher,
    hooks: {
      prepareTree: async (root: Digest) => {
        await fetcher.prepareTree(root);
        stopBar = fetchProgress(fetcher, 'fetch', showProgress);
      },
      ensureBlobs: (digests: Digest[]) => fetcher.ensureBlobs(digests),
      ...(direct
        ? {
            fetchBytes: (digests: Digest[], into: Uint8Array) => fetcher.fetchBytes(digests, into, true),
            fetchStream: (d: Digest, sink: (chunk: Buffer) => void, restart: () => void) => fetcher.fetchStream(d, sink, restart),
          }
        : {}),
      // Each batch fetches the blobs the store lacks into memory; the workers verify and store each
      // one, then copy it from memory, or link or clone the stored blob. --direct stores none.
      // Every plain checkout reads with --direct's larger batches (256 blobs / 4 MiB: about one
      // request per batch of the checkout); a SIGTERM still ends after the batches in flight
      // (remote.direct tests). Perf: the Linux tree's `--method hardlink`, 7 interleaved pairs at
      // load average 6.5-11.5: client CPU (user + sys) 5.19-7.35 s (median 5.72) against
      // 5.10-8.65 s (median 6.64) with 64 blobs / 1 MiB, server CPU 1.54-1.89 s (median 1.64)
      // against 1.56-2.54 s (median 1.87), peak RSS 263-286 MB against 258-280 MB; wall times
      // were noise at that load. A later set of 3 pairs at load 11.6-13.9 kept the server's gain
      // (1.48-1.74 s, median 1.65, against 1.63-1.94 s, median 1.84) but not the client's
      // (5.31-5.85 s, median 5.74, against 5.66-5.86 s, median 5.72).
      // Perf (copy, the default): the Linux tree from `treecast serve` into tmpfs, by digest and
      // by name, 3 interleaved rounds against 64 blobs / 1 MiB at load average 9-12: client CPU
      // (user + sys) by digest 7.23-7.96 s (median 7.76) against 9.12-9.25 s (median 9.16), by
      // name 7.14-8.43 s (median 7.63) against 7.98-8.40 s (median 8.07); server CPU 1.55-1.70 s
      // (median 1.60) against 1.64-1.83 s (median 1.71); peak RSS 248-262 MB against 256-269 MB.
      // `rsync -a` from a daemon in the same rounds: 4.01-4.53 s client and 2.76-3.07 s daemon CPU.
      // From a plain cache, fewer batches hold fetched bytes at once (execute.ts PLAIN_CACHE_SLABS).
      fetchFor: () => ({
        fetchBytes: (digests: Digest[], into: Uint8Array) => fetcher.fetchBytes(digests, into, true),
        fetchable: (d: Digest) => fetcher.claimAbsent(d),
        storeFetched: true,
        slabs: fetcher.plainCache ? PLAIN_CACHE_SLABS : undefined,
      }),
    },
    /** Waits for the fetcher, closes its connections and returns its counters. */
    async done() {
      stopBar();
      const summary = fetcher.summary();
      await fetcher.close();
      return summary;
    },
  };
}

function newFetcher(store: LocalStore, url: string, o: RemoteCliOptions, signal: AbortSignal): RemoteFetcher {
  const fetcher = new RemoteFetcher(store, clientOptions(url, o), { holdYoungGeneration: true });
  if (signal.aborted) fetcher.stop();
  else signal.addEventListener('abort', () => fetcher.stop(), { once: true });
  onSecondSignal(signal, () => fetcher.cut());
  return fetcher;
}

/**
 * SPEC, for a command given --remote: a digest or local ref as it is; otherwise a ref name looked
 * up on the remote, then each --fallback name in order (remote/refs.ts). A hit comes with the
 * fetcher that checked the server holds the whole tree, for the command to go on with.
 */
export async function resolveRemoteSpec(
  store: LocalStore,
  spec: string,
  fallbacks: readonly string[],
  url: string,
  o: RemoteCliOptions,
  signal: AbortSignal,
): Promise<{ root: Digest; fetcher?: RemoteFetcher; ref?: RefHit }> {
  if (isLocalSpec(store, spec)) return { root: store.resolve(spec) };
  const { hit, fetcher } = await resolveRemoteRef([spec, ...fallbacks], () => newFetcher(store, url, o, signal));
  return { root: store.resolve(hit.digest), fetcher, ref: hit };
}

/**
 * `checkout SPEC --remote` with its fallbacks. With `defer` (not --direct), a name from a plain
 * cache is checked out as its blobs arrive (the fetcher left it unsecured); a blob the cache lacks
 * undoes the checkout (materialize/created.ts) and the names after it are tried in turn. Exit 3
 * when none hits.
 */
export async function checkoutRemoteSpec<T>(
  store: LocalStore,
  spec: string,
  fallbacks: readonly string[],
  url: string,
  o: RemoteCliOptions,
  signal: AbortSignal,
  defer: boolean,
  run: (resolved: { root: Digest; fetcher?: RemoteFetcher; ref?: RefHit }, unsecured: CheckoutOptions['unsecured']) => Promise<T>,
): Promise<T> {
  if (isLocalSpec(store, spec)) return run({ root: store.resolve(spec) }, undefined);
  const names = [spec, ...fallbacks];
  const missed: RemoteRefMiss[] = [];
  for (;;) {
    const { hit, fetcher } = await resolveRemoteRef(names, () => newFetcher(store, url, o, signal), { missed, defer });
    const resolved = { root: store.resolve(hit.digest), fetcher, ref: hit };
    const unsecured = fetcher.unsecured ? { secure: () => fetcher.secureBlobs(), isMiss: (e: unknown) => e instanceof BlobNotFoundError } : undefined;
    try {
      return await run(resolved, unsecured);
    } catch (e) {
      if (!unsecured || !unsecured.isMiss(e)) throw e;
      const digest = (e as BlobNotFoundError).digest;
      missed.splice(0, missed.length, ...hit.missed, { name: hit.name, key: hit.key, reason: 'incomplete', detail: (e as Error).message, ...(digest !== undefined ? { digest } : {}) });
      names.splice(0, names.indexOf(hit.name) + 1);
      if (names.length === 0) throw remoteRefMissError(missed, fetcher.client.server);
    }
  }
}

/** The summary line of a remote name that hit. */
export function describeRefHit(hit: RefHit): string {
  return `ref '${hit.name}' found on the remote${hit.fallback ? ` (fallback; ${hit.missed.map((m) => `'${m.name}'`).join(', ')} missed)` : ''}`;
}

/**
 * `refs --remote URL NAME...`: each name's digest on the remote (its action cache entry), or
 * absent. Prints `<digest> <name>` per name found; exit 3 when any is absent.
 */
export async function listRemoteRefs(url: string, names: string[], o: RemoteCliOptions & { json?: boolean }): Promise<void> {
  if (names.length === 0) throw new UsageError('name at least one ref to look up on the remote');
  for (const n of names) checkRefName(n);
  const client = new RemoteClient(clientOptions(url, o));
  const rows: { name: string; key: string; digest: string | null; tree: string | null; missing?: string }[] = [];
  try {
    for (const name of names) {
      const ref = await lookupRef(client, name);
      const row: (typeof rows)[number] = { name, key: refKey(name), digest: ref?.root ? formatDigest(ref.root) : null, tree: ref ? formatDigest(ref.tree) : null };
      // An entry a treecast server holds but whose tree reaches a blob it lacks (lookupRef).
      if (ref?.missing !== undefined) row.missing = ref.missing;
      rows.push(row);
    }
  } finally {
    await client.close();
  }
  const absent = rows.filter((r) => r.tree === null || r.missing !== undefined);
  if (o.json) printJson({ ok: absent.length === 0, refs: rows });
  else {
    for (const r of rows) {
      if (r.tree === null) process.stderr.write(`treecast: no ref '${r.name}' on ${client.server}\n`);
      else if (r.missing !== undefined) process.stderr.write(`treecast: ref '${r.name}' on ${client.server} names ${r.missing === '' ? 'a blob' : `blob ${r.missing}`}, which the server lacks\n`);
      else process.stdout.write(`${r.digest ?? `tree:${r.tree}`} ${r.name}\n`);
    }
  }
  if (absent.length > 0) process.exitCode = ExitCode.notFound;
}

function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s) ?? (/^(\d{1,5})$/.exec(s) ? [s, undefined, '127.0.0.1', s] : null);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new UsageError(`--listen '${s}' is not HOST:PORT`, { hint: 'e.g. --listen 127.0.0.1:9090 or --listen [::1]:0' });
  return { host: (m[1] ?? m[2])!, port };
}

function parseSize(name: string): (v: string) => number {
  return (v: string) => {
    const m = /^(\d+)([KMGT]?)i?B?$/i.exec(v.trim());
    if (!m) throw new UsageError(`${name} '${v}' is not a size like 512M or 4G`);
    const mul = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
    return Number(m[1]) * mul;
  };
}

/**
 * A DIGEST or REF from the store, or a directory to snapshot first (a directory wins over a ref of
 * the same name). What exists on disk and is no ref, or could not be a ref name (`/abs/dir`,
 * `./dir`), is snapshotted: a missing one or a file gets snapshot's own error naming the path, not
 * "invalid ref name" or "no ref".
 */
async function resolveSource(store: LocalStore, spec: string, signal: AbortSignal): Promise<{ root: Digest; snapshotted: boolean }> {
  if (looksLikeDigest(spec) || /^[0-9a-fA-F]{64}/.test(spec)) return { root: store.resolve(spec), snapshotted: false };
  const refName = isRefName(spec);
  const st = refName ? fs.statSync(spec, { throwIfNoEntry: false }) : undefined;
  // A directory before a ref of the same name, as pack takes it: `push node_modules URL` must send
  // the directory as it is now, not an older snapshot that a ref named node_modules recorded.
  if (refName && !st?.isDirectory() && store.readRef(spec) !== undefined) return { root: store.resolve(spec), snapshotted: false };
  if (!refName || st !== undefined) {
    const r = await snapshot(spec, { store, signal });
    return { root: r.digest, snapshotted: true };
  }
  return { root: store.resolve(spec), snapshotted: false };
}

/**
 * A server that cannot write its store would answer every upload 500: it refuses to start
 * instead, naming the folder (the store another user made, a read-only mount).
 */
function refuseUnwritableStore(root: string): void {
  const cas = join(root, 'cas');
  let shards: string[] = [];
  try {
    shards = fs.readdirSync(cas).map((n) => join(cas, n));
  } catch {
    /* no cas folder yet, or none to read: the checks below name what is wrong */
  }
  for (const dir of [root, cas, join(root, 'tmp'), join(root, 'ac'), ...shards]) {
    try {
      fs.accessSync(dir, fs.constants.W_OK);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') continue;
      throw new FileSystemError(`cannot serve ${root} for uploads: cannot write ${dir}: ${code}`, {
        path: dir,
        cause: e,
        syscallCode: code,
        hint: 'serve it with --read-only, or as a user who can write the store',
      });
    }
  }
}

/** Listens; a raw listen error names no file, so the address is named (a port in use, a host not this machine's). */
async function listenOn(server: RemoteServer, listen: string): Promise<string> {
  try {
    return await server.listen();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new FileSystemError(`cannot listen on ${listen}: ${code} (${(e as Error).message})`, {
      path: listen,
      cause: e,
      syscallCode: code,
      hint: code === 'EADDRINUSE' ? 'another process listens there: stop it, or choose another port (--listen 127.0.0.1:0 picks a free one)' : undefined,
    });
  }
}

function isRefName(spec: string): boolean {
  try {
    checkRefName(spec);
    return true;
  } catch {
    return false;
  }
}

export function registerRemote(program: Command): void {
  // ---------------------------------------------------------------- serve
  const serve = program
    .command('serve')
    .description('serve the store over HTTP: the Bazel HTTP cache protocol (/cas/ and /ac/) plus treecast batch endpoints')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:9090')
    .option('--token <token>', 'require this bearer token on every request (or --token-file, or TREECAST_TOKEN)')
    .option('--token-file <file>', 'read the required token from the first line of FILE')
    .option('--read-only', 'refuse uploads (405, saying the server is read-only)')
    .option('--no-batch', 'offer only the plain Bazel HTTP cache protocol')
    .option('--no-ac-validation', 'store any bytes in the action cache (/ac/), as ccache needs; by default entries must be REAPI ActionResults')
    .option('--max-blob-size <size>', 'largest blob accepted (e.g. 512M, 64G)', parseSize('--max-blob-size'))
    .option('--access-log <file>', 'append one JSON line per request to FILE')
    .addOption(
      new Option('--max-connections <n>', 'most connections open at once; one more is answered 503 with Retry-After: 1 and closed')
        .argParser(intInRange('--max-connections', 1, 100_000))
        .default(512),
    )
    .addOption(new Option('--latency <ms>', 'hold every request MS milliseconds before answering (simulates a distant server)').argParser(intInRange('--latency', 0, 60_000)));
  addStoreOption(serve);
  addJsonOption(serve, 'one JSON object per line and event ("listening" with the URL once it listens, "stopped" with its status (the blobs and bytes its store holds) when it stops)');
  serve.action(
    async (o: { listen: string; token?: string; tokenFile?: string; readOnly?: boolean; batch: boolean; acValidation: boolean; maxBlobSize?: number; accessLog?: string; maxConnections: number; latency?: number; store?: string; json?: boolean }) => {
      const { host, port } = parseListen(o.listen);
      const token = resolveServerToken(o);
      const setup = new ServeSetup();
      const store = setup.openStore(defaultStorePath(o.store));
      let logFd: number | undefined;
      let server: RemoteServer;
      let url: string;
      try {
        if (!o.readOnly) refuseUnwritableStore(store.root);
        if (o.accessLog) logFd = setup.openLog(o.accessLog);
        server = new RemoteServer({
          store,
          host,
          port,
          token,
          readOnly: o.readOnly,
          batch: o.batch,
          acValidation: o.acValidation,
          maxBlobBytes: o.maxBlobSize,
          maxConnections: o.maxConnections,
          latencyMs: o.latency,
          log: logFd === undefined ? undefined : (e) => fs.writeSync(logFd!, `${JSON.stringify(e)}\n`),
        });
        url = await listenOn(server, o.listen);
      } catch (e) {
        if (logFd !== undefined) fs.closeSync(logFd);
        setup.abandon();
        throw e;
      }
      if (o.json) printJson({ ok: true, event: 'listening', url, store: store.root, batch: o.batch, readOnly: o.readOnly === true, acValidation: o.acValidation });
      else process.stderr.write(`treecast: serving ${store.root} at ${url}${token ? ' (token required)' : ''}${o.readOnly ? ' (read-only)' : ''}\n`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
      await server.close();
      if (logFd !== undefined) fs.closeSync(logFd);
      if (o.json) printJson({ ok: true, event: 'stopped', ...server.status() });
      else process.stderr.write(`treecast: stopped after ${server.status().requests} requests\n`);
    },
  );

  // ---------------------------------------------------------------- push
  const pushCmd = program
    .command('push')
    .description('upload a tree to a remote cache, sending only the blobs it lacks')
    .argument('<source>', 'tree digest, ref name, or a directory (snapshotted first)')
    .argument('<url>', 'remote cache URL, e.g. http://127.0.0.1:9090/')
    .option('--ref <name>', "then name the tree NAME on the remote (an action cache entry), for `checkout NAME DIR --remote URL` elsewhere");
  addRemoteClientOptions(pushCmd);
  addStoreOption(pushCmd);
  addJsonOption(pushCmd);
  pushCmd.action(async (spec: string, url: string, o: RemoteCliOptions & { ref?: string; store?: string; json?: boolean }) => {
    const copts = clientOptions(url, o);
    if (o.ref !== undefined) checkRefName(o.ref); // before any transfer
    const store = openStore(o);
    // The tree's blobs are read as they upload, and may be reachable from no ref: gc must not remove
    // them meanwhile (it is refused while this lock is held, as for pull).
    const writer = guardStoreWriter(store.root, 'push');
    try {
      await pushAction(store, spec, copts, o);
    } finally {
      writer.release();
    }
  });
}

async function pushAction(store: LocalStore, spec: string, copts: ReturnType<typeof clientOptions>, o: { ref?: string; json?: boolean }): Promise<void> {
  const t0 = performance.now();
  const bar = new ProgressBar(!o.json && process.stderr.isTTY === true);
  const r = await withSignals(async (signal) => {
    const { root, snapshotted } = await resolveSource(store, spec, signal);
    const client = new RemoteClient(copts);
    signal.addEventListener('abort', () => client.stop(), { once: true });
    onSecondSignal(signal, () => client.cut());
    try {
      const s = await push(store, client, root, {
        shouldStop: () => signal.aborted,
        onProgress: (done, total, bytes) => bar.update({ done, total, bytes, label: 'push' }),
      });
      // The name is written only once the whole tree is on the server.
      const ref: PushedRef | null = o.ref === undefined ? null : await pushRef(store, client, root, o.ref);
      return { ...s, requests: client.stats.requests, snapshotted, ref };
    } finally {
      await client.close();
    }
  });
  bar.finish();
  const seconds = (performance.now() - t0) / 1000;
  if (o.json) {
    printJson({ ok: true, ...r, seconds });
    return;
  }
  process.stderr.write(
    `pushed ${r.root}: ${r.uploaded} blob(s) sent (${formatBytes(r.uploadedBytes)}), ${r.present} already there, ${r.retried} retried; ${seconds.toFixed(2)} s\n`,
  );
  if (r.ref) process.stderr.write(`  named '${r.ref.name}' on the remote (ac/${r.ref.key})\n`);
  process.stdout.write(`${r.root}\n`);
}
