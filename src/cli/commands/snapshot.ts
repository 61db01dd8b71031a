import { Command } from 'commander';
import { formatDigest } from '../../core/digest.js';
import { snapshot } from '../../capture/snapshot.js';
import { addJobsOption, addJsonOption, addStoreOption, collect, openStore, withSignals } from '../common.js';
import { formatBytes, printJson, warn } from '../output.js';
import { ProgressBar } from '../progress.js';

export function registerSnapshot(program: Command): void {
  const cmd = program
    .command('snapshot')
    .description('capture DIR into the store and print its tree digest (the last line of output)')
    .argument('<dir>', 'directory to capture')
    .option('--ref <name>', 'also record the digest under this ref name')
    .option('--exclude <glob>', 'leave out matching entries; a glob without "/" matches names at any depth, one with "/" matches paths from DIR (repeatable)', collect)
    .option('--follow-symlinks', 'capture what symlinks point to instead of the links (loops are an error)')
    .option('--strict', 'make skipped special files (sockets, FIFOs, devices) an error')

  addJobsOption(cmd, 'hashing threads');
  addStoreOption(cmd);
  addJsonOption(cmd);
  cmd.action(async (dir: string, o: { ref?: string; exclude?: string[]; followSymlinks?: boolean; strict?: boolean; jobs?: number; store?: string; json?: boolean }) => {
    const store = openStore(o);
    const bar = new ProgressBar(!o.json && process.stderr.isTTY === true);
    const r = await withSignals((signal) =>
      snapshot(dir, {
        store,
        ref: o.ref,
        exclude: o.exclude,
        followSymlinks: o.followSymlinks,
        strict: o.strict,
        jobs: o.jobs,
        signal,
        onSkip: (s) => warn('TREECAST_SKIPPED_SPECIAL', `skipped ${s.kind} ${s.path}`),
        onProgress: (p) => bar.update({ ...p, label: 'hashing' }),
      }),
    );
    bar.finish();
    const digest = formatDigest(r.digest);
    if (o.json) {
      printJson({ ok: true, ...r, digest, ref: o.ref ?? null });
      return;
    }
    process.stderr.write(
      `snapshot: ${r.files} files, ${r.directories} directories, ${r.symlinks} symlinks, ${formatBytes(r.bytes)}; ` +
        `${r.hashedFiles} hashed (${formatBytes(r.hashedBytes)}), ${r.cachedFiles} unchanged; ${r.seconds.toFixed(2)} s\n`,
    );
    process.stdout.write(`${digest}\n`);
  });
}
