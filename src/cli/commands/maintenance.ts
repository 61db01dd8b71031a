import { Command, InvalidArgumentError } from 'commander';
import { DigestMismatchError } from '../../errors.js';
import { gcStore, verifyStore } from '../../store/maintenance.js';
import { addJsonOption, addStoreOption, intInRange, openExistingStore } from '../common.js';
import { escapeControl, formatBytes, printJson } from '../output.js';

export function registerMaintenance(program: Command): void {
  const verify = program
    .command('verify')
    .description(
      're-hash every blob in the store and report corrupt ones, and entries that are not blob files (a symlink is reported, never followed), and symlinks planted in refs/, ac/, checkouts/, locks/, stat-cache/ or complete/ (exit 5 when any is found and not repaired)',
    )
    .option('--repair', 'remove corrupt blobs and planted symlinks or files (never what a symlink points to) so they can be fetched or captured again');
  addStoreOption(verify);
  addJsonOption(verify);
  verify.action(async (o: { repair?: boolean; store?: string; json?: boolean }) => {
    const r = verifyStore(openExistingStore(o), o.repair === true);
    if (o.json) printJson({ ok: r.corrupt.length === 0 || r.repaired, ...r });
    else {
      for (const c of r.corrupt) {
        // A store entry that is not a blob file (a planted symlink, say) is named by its path: it was never read or followed.
        if (c.actual.startsWith('a ')) {
          const done = o.repair ? (c.actual === 'a directory' ? ': not removed, move it out of the store' : ': removed (its target untouched)') : '';
          process.stdout.write(`damaged ${escapeControl(c.path)} (${c.actual})${done}\n`);
        } else process.stdout.write(`corrupt ${c.hash} (${escapeControl(c.path)} hashes to ${c.actual})${o.repair ? ': removed' : ''}\n`);
      }
      process.stderr.write(`verify: ${r.checked} blobs, ${formatBytes(r.bytes)}, ${r.corrupt.length} corrupt\n`);
    }
    if (r.corrupt.length > 0 && !r.repaired) {
      process.exitCode = new DigestMismatchError('').exitCode;
    }
  });

  const gc = program
    .command('gc')
    .description('remove blobs not reachable from any ref, live checkout, checkout still running or action cache entry (a checkout, snapshot, import or pull started while gc runs is refused with exit 9, and gc is refused while a snapshot, import, pull or push runs)')
    .option('--dry-run', 'list what would be removed, remove nothing')
    .option('--grace <seconds>', 'keep unreachable blobs younger than this, as a snapshot may still be writing them', intInRange('--grace', 0, 10 ** 9), 3600)
    .option(
      '--max-age <duration>',
      'first drop action cache entries neither written nor read within DURATION (e.g. 7d, 12h, 30m, 90s), then what only they kept',
      parseDuration,
    );
  addStoreOption(gc);
  addJsonOption(gc);
  gc.action(async (o: { dryRun?: boolean; grace: number; maxAge?: number; store?: string; json?: boolean }) => {
    const r = gcStore(openExistingStore(o), { dryRun: o.dryRun === true, graceSeconds: o.grace, maxAgeSeconds: o.maxAge });
    if (o.json) {
      printJson({ ok: true, ...r });
      return;
    }
    if (r.dryRun) {
      for (const k of r.removedActions) process.stdout.write(`ac/${k}\n`);
      for (const h of r.removed) process.stdout.write(`${h}\n`);
    }
    const verb = r.dryRun ? 'would remove' : 'removed';
    process.stderr.write(
      `gc: ${r.roots} roots, ${r.actions} action cache entries, ${r.reachable} reachable; ${verb} ${r.removedActions.length} action cache entries, ` +
        `${r.removed.length} blobs (${formatBytes(r.removedBytes)})\n`,
    );
  });
}

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 };

/** '7d', '12h', '30m', '90s', '2w' (a bare number is seconds) to seconds. */
function parseDuration(v: string): number {
  const m = /^(\d{1,9})([smhdw]?)$/.exec(v.trim());
  if (!m) throw new InvalidArgumentError(`--max-age '${v}' is not a duration like 7d, 12h, 30m or 90s`);
  return Number(m[1]) * DURATION_UNITS[m[2] || 's']!;
}
