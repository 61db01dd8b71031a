/**
 * `treecast pull`: fetch a whole tree into the store.
 *
 * Perf: a pull of a tree an earlier pull left whole (store/completeness.ts) answers from one small
 * file and loads neither the HTTP client nor the tree code; loading them is most of that command's
 * time (undici alone cost ~90 ms of CPU to import, `node -e 0` ~55 ms).
 */
import type { Command } from 'commander';
import { formatDigest } from '../../core/digest.js';
import { checkRefName } from '../../store/local.js';
import { parseRemoteUrl } from '../../remote/url.js';
import { pulledAlready } from '../../remote/pulled.js';
import { addJsonOption, addStoreOption, openStore, withSignals } from '../common.js';
import { formatBytes, printJson } from '../output.js';
import { type RemoteCliOptions, addRemoteClientOptions, clientOptions } from '../remote-options.js';

export function registerPull(program: Command): void {
  const pullCmd = program
    .command('pull')
    .description('fetch a whole tree from a remote cache into the store (resumable: run it again after a cut)')
    .argument('<digest>', 'tree digest (<sha256>/<size>) or a ref name in the local store')
    .argument('<url>', 'remote cache URL, e.g. http://127.0.0.1:9090/')
    .option('--ref <name>', 'record the digest under this ref name once the tree is complete');
  addRemoteClientOptions(pullCmd);
  addStoreOption(pullCmd);
  addJsonOption(pullCmd);
  pullCmd.addHelpText('after', '\nA tree an earlier pull into this store completed is not fetched or read again (until gc or verify --repair removes a blob).');
  pullCmd.action(async (spec: string, url: string, o: RemoteCliOptions & { ref?: string; store?: string; json?: boolean }) => {
    parseRemoteUrl(url);
    const copts = clientOptions(url, o);
    const store = openStore(o);
    if (o.ref !== undefined) checkRefName(o.ref); // before any transfer
    const root = store.resolve(spec);
    const t0 = performance.now();
    let r = pulledAlready(store, root);
    if (!r) {
      const [{ RemoteFetcher }, { fetchProgress }] = await Promise.all([import('../../remote/fetch.js'), import('./remote.js')]);
      const fetcher = new RemoteFetcher(store, copts);
      const stopBar = fetchProgress(fetcher, 'pull', !o.json && process.stderr.isTTY === true);
      try {
        r = await withSignals((signal) => {
          signal.addEventListener('abort', () => fetcher.stop(), { once: true });
          return fetcher.pull(root);
        });
      } finally {
        stopBar();
        await fetcher.close();
      }
    }
    if (o.ref !== undefined) store.writeRef(o.ref, root);
    const seconds = (performance.now() - t0) / 1000;
    if (o.json) {
      printJson({ ok: true, ...r, ref: o.ref ?? null, seconds });
      return;
    }
    process.stderr.write(
      `pulled ${formatDigest(root)}: ${r.fetched} blob(s) fetched (${formatBytes(r.fetchedBytes)}), ${r.skipped} already present, ` +
        `${r.retried} retried, ${r.requests} requests; ${seconds.toFixed(2)} s\n`,
    );
    process.stdout.write(`${formatDigest(root)}\n`);
  });
}
