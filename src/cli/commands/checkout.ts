import { Command, Option } from 'commander';
import type { Digest } from '../../core/digest.js';
import { UsageError } from '../../errors.js';
import { CHECKOUT_METHODS, type CheckoutMethod, type CheckoutOptions, checkout } from '../../materialize/checkout.js';
import { addJobsOption, addJsonOption, addStoreOption, explainNotATree, openStore, withSignals } from '../common.js';
import { formatBytes, printJson } from '../output.js';
import { escapeControl } from '../../core/display.js';
import { ProgressBar } from '../progress.js';
import { type RemoteCliOptions, addRemoteClientOptions, collect } from '../remote-options.js';
import type { remoteCheckoutHooks } from './remote.js';

type RemoteHooks = ReturnType<typeof remoteCheckoutHooks>;

export function registerCheckout(program: Command): void {
  const cmd = program
    .command('checkout')
    .description('materialize a tree into DIR; into an earlier checkout, only what differs is touched')
    .argument('<digest>', 'tree digest (<sha256>/<size>) or ref name; with --remote, a name that is neither is looked up on the remote')
    .argument('<dir>', 'target directory (created when absent)')
    .addOption(
      new Option('--method <method>', 'how files are made: clone (reflink), hardlink (read-only, shares the store inode), copy, or auto (clone where the filesystem can, else copy)')
        .choices(CHECKOUT_METHODS as string[])
        .default('auto'),
    )
    .option('--force', 'replace entries that differ from the tree, local changes included, instead of stopping; files the tree does not have are kept')
    .option('--clean', 'remove files and directories the tree does not have (untracked), listing each one')
    .option('--verify', 're-hash every blob before writing it (catches a corrupt store)')
    .option('--remote <url>', 'fetch what the store lacks from this remote cache while checking out')
    .option('--direct', 'with --remote: write fetched files straight into DIR, each verified first, and keep none in the store (one write per byte; see below)')
    .option('--fallback <name>', 'with --remote: when DIGEST is a remote name that misses, try this one next (repeatable, tried in order)', collect);
  cmd.addHelpText(
    'after',
    `
Local changes: a file changed since the last checkout is never overwritten or removed without
--force (exit 4, the paths listed). --force replaces what differs from the tree, everywhere in it;
files the tree does not have are kept, and only --clean removes them: a folder holding such files
where the tree has a file or symlink stops --force too (exit 4, those files listed).
See \`treecast status DIR\`.
A DIR that contains the store or lies inside it is refused (exit 7). One checkout or unpack writes a
DIR at a time: another one running there makes this one fail at once (exit 9, its pid named).

--remote keeps every fetched blob in the store (verified), so a later checkout needs no network.
With the copy method, each blob is fetched into memory, checked, and written both into the store
and into DIR (two copies, never read back); hardlink or clone store it the same way and link or
clone from there.

--direct, for one-off restores, writes each file once: its bytes are held in memory, their SHA-256
checked, and only then is the file created (never through an existing name). No file blob enters
the store (Directory messages still do); a file over 4 MiB streams into a temporary name beside it
and takes its name once checked. DIR is recorded as usual, so status and an update work; an update
or --force that needs a blob again fetches it with --remote, or fails naming the blob without it.
--direct writes copies: --method hardlink or clone is refused.`,
  );
  addRemoteClientOptions(cmd);
  addJobsOption(cmd, 'worker threads');
  addStoreOption(cmd);
  addJsonOption(cmd);
  cmd.action(async (spec: string, dir: string, o: RemoteCliOptions & { method: CheckoutMethod; force?: boolean; clean?: boolean; verify?: boolean; jobs?: number; remote?: string; direct?: boolean; fallback?: string[]; store?: string; json?: boolean }) => {
    if (o.fallback && !o.remote) throw new UsageError('--fallback needs --remote: fallback names are looked up on a remote');
    if (o.direct && !o.remote) throw new UsageError('--direct needs --remote: it writes fetched files straight into DIR');
    if (o.direct && (o.method === 'hardlink' || o.method === 'clone')) {
      throw new UsageError(`--direct writes copies; --method ${o.method} needs the blobs in the store`, { hint: 'drop --direct to keep fetched blobs in the store' });
    }
    const store = openStore(o);
    let root: Digest | undefined = o.remote ? undefined : store.resolve(spec);
    const bar = new ProgressBar(!o.json && process.stderr.isTTY === true);
    // The HTTP client is loaded only for --remote (it is a fifth of a small checkout's start-up).
    const remoteCli = o.remote ? await import('./remote.js') : undefined;
    let fetched: Awaited<ReturnType<RemoteHooks['done']>> | undefined;
    let remote: RemoteHooks | undefined;
    let hit: Awaited<ReturnType<NonNullable<typeof remoteCli>['resolveRemoteSpec']>>['ref'];
    const r = await withSignals(async (signal) => {
      const run = (unsecured?: CheckoutOptions['unsecured']) =>
        checkout(root!, dir, {
          store,
          method: o.direct ? 'copy' : o.method,
          force: o.force,
          clean: o.clean,
          verify: o.verify,
          jobs: o.jobs,
          signal,
          onProgress: (p) => bar.update({ ...p, label: 'checkout' }),
          ...remote?.hooks,
          unsecured,
          source: { spec, remote: o.remote },
        }).finally(async () => {
          if (remote) fetched = await remote.done();
        });
      if (!remoteCli || !o.remote) return run();
      // A name that is neither a digest nor a local ref is looked up on the remote (and its
      // fallbacks); a name missing a blob is a miss, and leaves the target as it was.
      return remoteCli.checkoutRemoteSpec(store, spec, o.fallback ?? [], o.remote, o, signal, o.direct !== true, (resolved, unsecured) => {
        root = resolved.root;
        hit = resolved.ref;
        remote = remoteCli.remoteCheckoutHooks(store, o.remote!, o, signal, !o.json && process.stderr.isTTY === true, resolved.fetcher, o.direct === true);
        return run(unsecured);
      });
    }).catch((e: unknown) => {
      throw explainNotATree(e, [root], 'checkout');
    });
    bar.finish();
    if (o.json) {
      printJson({ ok: true, ...r, ...(fetched ? { remote: fetched } : {}), ...(hit ? { remoteRef: hit } : {}) });
      return;
    }
    if (hit && remoteCli) process.stderr.write(`${remoteCli.describeRefHit(hit)}\n`);
    process.stderr.write(
      `checked out ${r.digest} into ${r.target} (${r.incremental ? 'update' : 'full'}, ${r.method}): ` +
        `${r.cloned} cloned, ${r.hardlinked} hardlinked, ${r.copied} copied, ${r.empty} empty, ${r.symlinks} symlinks, ` +
        `${r.directories} directories, ${r.removed} removed, ${r.unchanged} unchanged` +
        `${o.clean ? `, ${r.cleaned.length} untracked removed` : ''}; ${formatBytes(r.bytes)} in ${r.seconds.toFixed(2)} s\n`,
    );
    for (const p of r.cleaned) process.stderr.write(`  removed untracked: ${escapeControl(p)}\n`);
    if (r.fallbacks > 0) process.stderr.write(`  ${r.fallbacks} file(s) fell back to copy (${r.fallbackReason})\n`);
  });
}
