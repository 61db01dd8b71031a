/**
 * `treecast pull`: fetch a whole tree into the store.
 *
 * Perf: a pull of a tree an earlier pull left whole (store/completeness.ts) answers from one small
 * file and loads neither the HTTP client nor the tree code; loading them is most of that command's
 * time (undici alone cost ~90 ms of CPU to import, `node -e 0` ~55 ms).
 */
import type { Command } from 'commander';
import { type Digest, formatDigest } from '../../core/digest.js';
import type { FetchSummary } from '../../remote/fetch.js';
import type { RefHit } from '../../remote/refs.js';
import { parseRemoteUrl } from '../../remote/url.js';
import { pulledAlready } from '../../remote/pulled.js';
import { addJsonOption, addStoreOption, onSecondSignal, openStore, withSignals } from '../common.js';
import { guardStoreWriter } from '../../fs/target-guard.js';
import { formatBytes, printJson } from '../output.js';
import { type RemoteCliOptions, addRemoteClientOptions, clientOptions, collect, isLocalSpec } from '../remote-options.js';

export function registerPull(program: Command): void {
  const pullCmd = program
    .command('pull')
    .description('fetch a whole tree from a remote cache into the store (resumable: run it again after a cut)')
    .argument('<digest>', 'tree digest (<sha256>/<size>), a ref name in the local store, or else a ref name on the remote')
    .argument('<url>', 'remote cache URL, e.g. http://127.0.0.1:9090/')
    .option('--ref <name>', 'record the digest under this local ref name once the tree is complete')
    .option('--fallback <name>', 'when DIGEST is a remote name that misses, try this one next (repeatable, tried in order)', collect);
  addRemoteClientOptions(pullCmd);
  addStoreOption(pullCmd);
  addJsonOption(pullCmd);
  pullCmd.addHelpText('after', '\nA tree an earlier pull into this store completed is not fetched or read again (until gc or\nverify --repair removes a blob).');
  pullCmd.action(async (spec: string, url: string, o: RemoteCliOptions & { ref?: string; fallback?: string[]; store?: string; json?: boolean }) => {
    parseRemoteUrl(url);
    const copts = clientOptions(url, o);
    const store = openStore(o);
    if (o.ref !== undefined) store.checkRefWritable(o.ref); // before any transfer
    // Blobs already stored are kept, not fetched again: gc must not remove them before the ref is written.
    const writer = guardStoreWriter(store.root, 'pull');
    const t0 = performance.now();
    let root: Digest;
    let r: FetchSummary | undefined;
    let hit: RefHit | undefined;
    try {
      if (isLocalSpec(store, spec)) {
        root = store.resolve(spec);
        r = pulledAlready(store, root);
      } else {
        // A name on the remote (then each fallback): the fetcher that found the whole tree pulls it.
        const [{ resolveRemoteSpec, fetchProgress }] = await Promise.all([import('./remote.js')]);
        const got = await withSignals(async (signal) => {
          const resolved = await resolveRemoteSpec(store, spec, o.fallback ?? [], url, o, signal);
          const fetcher = resolved.fetcher!;
          const stopBar = fetchProgress(fetcher, 'pull', !o.json && process.stderr.isTTY === true);
          try {
            return { root: resolved.root, hit: resolved.ref, summary: await fetcher.pull(resolved.root) };
          } finally {
            stopBar();
            await fetcher.close();
          }
        });
        ({ root, hit } = got);
        r = got.summary;
      }
      if (!r) {
        const [{ RemoteFetcher }, { fetchProgress }] = await Promise.all([import('../../remote/fetch.js'), import('./remote.js')]);
        const fetcher = new RemoteFetcher(store, copts);
        const stopBar = fetchProgress(fetcher, 'pull', !o.json && process.stderr.isTTY === true);
        try {
          r = await withSignals((signal) => {
            signal.addEventListener('abort', () => fetcher.stop(), { once: true });
            onSecondSignal(signal, () => fetcher.cut());
            return fetcher.pull(root);
          });
        } finally {
          stopBar();
          await fetcher.close();
        }
      }
      if (o.ref !== undefined) store.writeRef(o.ref, root);
    } finally {
      writer.release();
    }
    const seconds = (performance.now() - t0) / 1000;
    if (o.json) {
      printJson({ ok: true, ...r, ref: o.ref ?? null, ...(hit ? { remoteRef: hit } : {}), seconds });
      return;
    }
    if (hit) process.stderr.write(`${(await import('./remote.js')).describeRefHit(hit)}\n`);
    process.stderr.write(
      `pulled ${formatDigest(root)}: ${r.fetched} blob(s) fetched (${formatBytes(r.fetchedBytes)}), ${r.skipped} already present, ` +
        `${r.retried} retried, ${r.requests} requests; ${seconds.toFixed(2)} s\n`,
    );
    process.stdout.write(`${formatDigest(root)}\n`);
  });
}
