/** `treecast pack`, `unpack` and `import`: zip and tar archives of directories and store trees. */
import * as fs from 'node:fs';
import { resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { InvalidRefNameError, RefNotFoundError, TargetError } from '../../errors.js';
import { formatDigest } from '../../core/digest.js';
import { defaultJobs } from '../../fs/worker-pool.js';
import { pack, FORMATS, LEVELS, type ArchiveFormat, type Level } from '../../archive/pack.js';
import { unpack } from '../../archive/unpack.js';
import { importArchive } from '../../archive/import.js';
import { DEFAULT_MAX_RATIO } from '../../archive/entry-rules.js';
import { addJobsOption, addJsonOption, addStoreOption, intInRange, openStore, withSignals } from '../common.js';
import { formatBytes, printJson, warn } from '../output.js';
import { ProgressBar } from '../progress.js';
import { defaultStorePath } from '../../store/local.js';

function level(v: string): Level {
  if (!(v in LEVELS)) throw new InvalidArgumentError(`--level must be one of ${Object.keys(LEVELS).join(', ')}`);
  return v as Level;
}

function archiveFormat(v: string): ArchiveFormat {
  if (!(FORMATS as readonly string[]).includes(v)) throw new InvalidArgumentError(`--format must be one of ${FORMATS.join(', ')}`);
  return v as ArchiveFormat;
}

function positiveNumber(name: string): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!/^\d+(\.\d+)?$/.test(v) || !(n >= 1)) throw new InvalidArgumentError(`${name} must be a number >= 1`);
    return n;
  };
}

function bytes(v: string): number {
  const m = /^(\d+)([KMGT]i?B?)?$/i.exec(v);
  const n = m ? Number(m[1]) * 1024 ** (m[2] ? 'KMGT'.indexOf(m[2][0]!.toUpperCase()) + 1 : 0) : NaN;
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError('--max-size must be a byte count such as 1048576, 512M or 4G');
  return n;
}

function summaryLine(verb: string, r: { entries: number; files: number; dirs: number; symlinks: number; bytesIn: number; bytesOut: number; seconds: number }): string {
  return `${verb}: ${r.entries} entries (${r.files} files, ${r.dirs} directories, ${r.symlinks} symlinks), ${formatBytes(r.bytesIn)} in, ${formatBytes(r.bytesOut)} out; ${r.seconds.toFixed(2)} s\n`;
}

export function registerArchive(program: Command): void {
  const packCmd = program
    .command('pack')
    .description('write a zip or tar (.tar, .tar.gz, .tar.zst) of DIR, or of a tree in the store (DIGEST or REF) without writing the tree to disk')
    .argument('<source>', 'a directory, or a tree digest or ref name in the store')
    .argument('<out>', "the archive to write (replaced when complete; a device or FIFO is refused); '-' writes to stdout (needs --format)")
    .option('--level <level>', 'compression: store (none), fast, default or best; an entry deflate makes larger is stored', level, 'default' as Level)
    .option('--format <format>', 'zip, tar, tar.gz or tar.zst (default: told by the name of OUT: .tar, .tar.gz or .tgz, .tar.zst or .tzst, else zip; a suffix of another format, such as .tar.xz, is refused)', archiveFormat)

  addJobsOption(packCmd, 'compression threads');
  addStoreOption(packCmd);
  addJsonOption(packCmd);
  packCmd.addHelpText(
    'after',
    `
Entries carry unix modes, symlinks (as links, not followed) and modification times; directories are
entries too. Zip64 is used when needed (over 65,535 entries, over 4 GiB). Trees from the store are
packed with modes 0644/0755 and a fixed time (1980-01-01), so one tree always packs to the same zip.
Sockets, FIFOs and devices are skipped with a warning. The store (--store), when it lies inside
DIR, is left out, as snapshot leaves it out; so is OUT when it lies inside DIR (any spelling).

tar archives are ustar with pax records where ustar cannot hold a name, link target, size or time
(GNU tar and bsdtar read them). .tar.gz is deflated on every core into one ordinary gzip stream
(--level: fast 1, default 6, best 9), .tar.zst by the zstd program on every core (fast 1,
default 3, best 19).
From the store, a tree packs to the same bytes every time (owner 0, fixed modes, time and order).`,
  );
  packCmd.action(async (source: string, out: string, o: { level: Level; format?: ArchiveFormat; jobs?: number; store?: string; json?: boolean }) => {
    const drawing = !o.json && process.stderr.isTTY === true;
    const bar = new ProgressBar(drawing);
    const st = fs.statSync(source, { throwIfNoEntry: false });
    if (st && !st.isDirectory()) throw new TargetError(`cannot pack ${resolve(source)}: not a directory (pack takes a directory, a tree digest or a ref)`, { path: resolve(source) });
    // Perf: no progress callback when no bar is drawn: pack calls it once per file, and its two
    // objects per call were 113 ms of the main thread packing the Linux tree (--cpu-prof).
    const onProgress = drawing ? (p: { done: number; total: number; bytes: number }) => bar.update({ ...p, label: 'packing' }) : undefined;
    const r = await withSignals((signal) => {
      const opts = { level: o.level, format: o.format, jobs: o.jobs ?? defaultJobs(), signal, onWarning: warn, onProgress, storeRoot: defaultStorePath(o.store) };
      if (st?.isDirectory()) return pack({ dir: source }, out, opts);
      const store = openStore(o);
      let root;
      try {
        root = store.resolve(source);
      } catch (e) {
        if (!(e instanceof InvalidRefNameError || e instanceof RefNotFoundError)) throw e;
        throw new RefNotFoundError(`cannot pack ${source}: no such directory, and no tree digest or ref of that name in the store`, { path: source });
      }
      return pack({ store, root }, out, opts);
    });
    bar.finish();
    if (o.json) printJson({ ok: true, ...r });
    else process.stderr.write(summaryLine('pack', r));
  });

  const unpackCmd = program
    .command('unpack')
    .description('extract a zip or tar (.tar, .tar.gz, .tar.zst) into DIR (created when missing), refusing anything that could write outside it')
    .argument('<archive>', "the archive to read; its format is told by its content; '-' reads a tar from stdin")
    .argument('<dir>', 'the directory to extract into')
    .option('--force', 'replace files and symlinks that already exist in DIR (never directories; never followed); they are replaced only once the whole archive was extracted, so a failed or interrupted unpack leaves them as they were')
    .option('--keep-partial', 'when a damaged entry is met while extracting, keep the entries before it instead of removing everything written')
    .option('--max-ratio <n>', 'refuse entries that inflate more than N times their compressed size', positiveNumber('--max-ratio'), DEFAULT_MAX_RATIO)
    .option('--max-size <bytes>', 'refuse archives whose entries add up to more than this (suffixes K, M, G, T)', bytes)
    .option('--strip-components <n>', 'tar: remove N leading components from every name (as GNU tar); shorter names are skipped', intInRange('--strip-components', 0, 1024))
    .option('--strict', 'tar: refuse devices, FIFOs, sparse files and other special entries instead of skipping them with a warning')
    .option('--same-owner', 'tar: restore owners (uid, gid) from the archive; root only')
    .option('--safe-links', 'refuse symlinks whose targets are absolute or lead out of DIR (for untrusted archives); by default any target is kept, and no link is ever followed or written through while extracting')
    .option('--json', 'print one JSON object on stdout instead of human-readable lines');
  addJobsOption(unpackCmd, 'extraction threads');
  // The store is not written; its path is the one a DIR must not hold or lie in.
  addStoreOption(unpackCmd);
  unpackCmd.addHelpText(
    'after',
    `
The whole central directory and every symlink target are checked before anything is written.
Refused (exit 6, nothing from the archive left in DIR): absolute names, '..', backslashes and drive
letters, names over 4096 bytes or deeper than 1024 levels, duplicate entries, entries under a
symlink or file of the archive, with --safe-links symlinks whose targets are absolute or climb out
of DIR, devices, FIFOs and sockets, encrypted entries, overlapping entries, sizes or CRCs that
disagree with the data, ratios past --max-ratio and totals past --max-size, truncated archives.
setuid, setgid and sticky bits are stripped with a warning. Existing files in DIR are never
overwritten without --force, and a symlink already in DIR is never written through. With --force,
the new version of an existing file is written beside it as .treecast-new-<run>-<n> and renamed over
it only after every entry was extracted; a failure or SIGINT/SIGTERM before that removes those and
leaves DIR's files as they were (after a SIGKILL, remove any .treecast-new-* left). An archive file
where DIR has a directory, or an archive directory where DIR has a file, is refused even with
--force (exit 7).
A DIR that contains the store (--store) or lies inside it is refused (exit 7). One checkout or
unpack writes a DIR at a time, whichever store each uses: another one running there makes this one
fail at once (exit 9). The lock lives in the temp dir (TMPDIR/treecast-locks-UID).

tar archives (ustar, pax, GNU; plain, gzip or zstd, told by their first bytes) are read as one
stream: every entry is judged by the same rules as it arrives (hardlinks must name an earlier
file of the archive) and written into a staging directory inside DIR, which is moved into place
only after the whole archive was read and accepted; a refused or interrupted unpack leaves DIR as
it was. --max-ratio applies to the whole stream. Devices, FIFOs and sparse files are skipped with
a warning (refused with --strict); owners are not restored unless --same-owner.`,
  );
  unpackCmd.action(async (archive: string, dir: string, o: { jobs?: number; force?: boolean; keepPartial?: boolean; maxRatio: number; maxSize?: number; stripComponents?: number; strict?: boolean; sameOwner?: boolean; safeLinks?: boolean; store?: string; json?: boolean }) => {
    const bar = new ProgressBar(!o.json && process.stderr.isTTY === true);
    const r = await withSignals((signal) => unpack(archive, dir, {
      signal,
      storeRoot: defaultStorePath(o.store),
      jobs: o.jobs ?? defaultJobs(),
      force: o.force,
      keepPartial: o.keepPartial,
      maxRatio: o.maxRatio,
      maxSize: o.maxSize,
      stripComponents: o.stripComponents,
      strict: o.strict,
      sameOwner: o.sameOwner,
      safeLinks: o.safeLinks,
      onWarning: warn,
      onProgress: (p) => bar.update({ ...p, label: 'unpacking' }),
    }));
    bar.finish();
    if (o.json) printJson({ ok: true, ...r });
    else process.stderr.write(summaryLine('unpack', r));
  });

  const importCmd = program
    .command('import')
    .description('store the tree of a zip or tar (.tar, .tar.gz, .tar.zst) without writing it to disk; prints the tree digest (the last line of output)')
    .argument('<archive>', "the archive to read; its format is told by its content; '-' reads a tar from stdin")
    .option('--ref <name>', 'also record the digest under this ref name')
    .option('--max-ratio <n>', 'refuse entries that inflate more than N times their compressed size', positiveNumber('--max-ratio'), DEFAULT_MAX_RATIO)
    .option('--max-size <bytes>', 'refuse archives whose entries add up to more than this (suffixes K, M, G, T)', bytes)
    .option('--strip-components <n>', 'tar: remove N leading components from every name (as GNU tar); shorter names are skipped', intInRange('--strip-components', 0, 1024))
    .option('--strict', 'tar: refuse devices, FIFOs, sparse files and other special entries instead of skipping them with a warning')
    .option('--safe-links', 'refuse symlinks whose targets are absolute or lead out of the tree (for untrusted archives); by default any target is kept verbatim, as snapshot does');
  addJobsOption(importCmd, 'threads');
  addStoreOption(importCmd);
  addJsonOption(importCmd);
  importCmd.addHelpText('after', '\nThe archive is checked by the same rules as `unpack`; the digest equals that of\n`treecast snapshot` of the unpacked directory.');
  importCmd.action(async (archive: string, o: { ref?: string; jobs?: number; maxRatio: number; maxSize?: number; stripComponents?: number; strict?: boolean; safeLinks?: boolean; store?: string; json?: boolean }) => {
    const store = openStore(o);
    const bar = new ProgressBar(!o.json && process.stderr.isTTY === true);
    const r = await withSignals((signal) => importArchive(archive, store, {
      signal,
      jobs: o.jobs ?? defaultJobs(),
      ref: o.ref,
      maxRatio: o.maxRatio,
      maxSize: o.maxSize,
      stripComponents: o.stripComponents,
      strict: o.strict,
      safeLinks: o.safeLinks,
      onWarning: warn,
      onProgress: (p) => bar.update({ ...p, label: 'importing' }),
    }));
    bar.finish();
    const digest = formatDigest(r.root);
    if (o.json) {
      printJson({ ok: true, ...r, digest, root: undefined, ref: o.ref ?? null });
      return;
    }
    process.stderr.write(summaryLine('import', r));
    process.stdout.write(`${digest}\n`);
  });
}
