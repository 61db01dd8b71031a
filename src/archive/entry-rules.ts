/**
 * Judges every central-directory entry before anything is written (pure: no I/O). An archive is
 * accepted whole or refused whole; the error names the entry and the reason.
 *
 * Refused: names that are absolute, climb ('..'), hold '.', empty parts, NUL or a backslash, start
 * with a drive letter, exceed 4096 bytes or nest deeper than MAX_DEPTH; device, FIFO and socket
 * modes; encrypted entries and methods other than store/deflate; duplicates of any kind; entries
 * lying under a file or a symlink of the archive; stored entries whose sizes disagree; ratios past
 * `maxRatio`; totals past `maxSize`; entries whose local data overlaps another entry or the central
 * directory. setuid, setgid and sticky bits are stripped with a warning (as Info-ZIP unzip does
 * without -K). Symlink targets are judged by symlinkTargetRule once their data is read: any target
 * is kept by default (links are never followed or written through while extracting), and with
 * `safeLinks` absolute targets and targets that leave the extraction root are refused.
 */
import { ArchiveError, UnsafePathError } from '../errors.js';
import { MAX_DEPTH, nameProblem, symlinkTargetProblem } from '../core/names.js';
import { escapeControl } from '../core/display.js';
import type { RawEntry } from './central-directory.js';
import {
  DOS_DIR_ATTR,
  FLAG_ENCRYPTED,
  FLAG_STRONG_ENCRYPTION,
  HOST_UNIX,
  LOCAL_HEADER_SIZE,
  METHOD_DEFLATE,
  METHOD_STORE,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
} from './zip-format.js';

export const MAX_ENTRY_NAME_BYTES = 4096;
export const DEFAULT_MAX_RATIO = 1000;

export type EntryType = 'file' | 'dir' | 'symlink';

/** An entry that passed every rule: safe relative path, known type, data extent inside the archive. */
export interface ArchiveEntry {
  index: number;
  /** Relative '/'-separated path without a trailing slash. */
  path: string;
  /** The stored name exactly (compared with the local header's). */
  rawName: string;
  type: EntryType;
  /** Permission bits (0o777 at most), or undefined when the archive carries no unix mode. */
  perm: number | undefined;
  mtime: number;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  localOffset: number;
  /** Length of the stored name in bytes. */
  nameLength: number;
  /** Where the next entry's local header (or the central directory) starts: this entry must end before it. */
  limit: number;
}

export interface Limits {
  maxRatio: number;
  maxSize: number;
}

export interface Judged {
  entries: ArchiveEntry[];
  warnings: { code: string; message: string; path: string }[];
  totalSize: number;
}

const DRIVE_RE = /^[A-Za-z]:/;
/** Printable ASCII without '/' and '\\': such a part of at most 255 characters is at most 255 bytes and valid. */
const SIMPLE_RE = /^[\x20-\x2e\x30-\x5b\x5d-\x7e]+$/;

function unsafe(shown: string, why: string): UnsafePathError {
  return new UnsafePathError(`archive entry '${shown}': ${why}`, { path: shown });
}
function refused(shown: string, why: string): ArchiveError {
  return new ArchiveError(`archive entry '${shown}': ${why}`, { path: shown });
}

/**
 * A whole name of SIMPLE_RE parts of 1 to 255 characters, with an optional '/' at the end. One with
 * at most 2,047 characters, no drive letter and no part starting with '.' passes every check below.
 */
const SIMPLE_NAME_RE = /^(?:[\x20-\x2e\x30-\x5b\x5d-\x7e]{1,255}\/)*[\x20-\x2e\x30-\x5b\x5d-\x7e]{1,255}\/?$/;
/** 2,047 characters hold at most 1,024 parts (MAX_DEPTH) and, in ASCII, 4,096 bytes (MAX_ENTRY_NAME_BYTES). */
const SIMPLE_NAME_MAX = 2047;

/**
 * The names unpack gives its own work folders and files: staging (`.treecast-unpack-<pid>-*`, see
 * tar-unpack.ts), files set aside by --force (`.treecast-replaced-<pid>-*`) and replacements in
 * progress (`.treecast-new-<pid>-*`, replacements.ts). An entry with such a part, at any depth, is
 * refused: the clean-up of a killed unpack's staging knows it by this name, and no marker inside
 * a folder can tell it from an archive's (an archive can hold any file, mode and mtime, a pid
 * file included), so the guarantee is that unpack itself never makes one from an archive. A part
 * named so is refused wherever it lies, as a later unpack may target that subfolder.
 */
const WORK_NAME_RE = /^\.treecast-(?:unpack|replaced|new)-/;
const WORK_NAME_SHOWN = "'.treecast-unpack-*', '.treecast-replaced-*', '.treecast-new-*'";

/** Checks one stored name and returns its relative path (no trailing slash) and whether it ended in '/'. */
export function entryPath(name: string): { path: string; slash: boolean } {
  // Perf: one regular expression over the whole name instead of a split and a test per part; on
  // the Linux tree's zip (83,730 names) entryPath took 58-78 ms of CPU (median 67) in a fresh
  // process, 24-37 ms (34) with this (5 interleaved runs, load 11). Any other name takes the
  // full check, which alone decides what is refused and how.
  if (name.length <= SIMPLE_NAME_MAX && name.charCodeAt(0) !== 0x2e && !name.includes('/.') && SIMPLE_NAME_RE.test(name) && !DRIVE_RE.test(name)) {
    const slash = name.charCodeAt(name.length - 1) === 0x2f;
    return { path: slash ? name.slice(0, -1) : name, slash };
  }
  const shown = name.length > 200 ? `${name.slice(0, 200)}...` : name;
  if (Buffer.byteLength(name) > MAX_ENTRY_NAME_BYTES) throw unsafe(shown, `name is longer than ${MAX_ENTRY_NAME_BYTES} bytes`);
  if (name.includes('\0')) throw unsafe(shown, 'name contains a NUL byte');
  if (name.includes('\\')) throw unsafe(shown, "name contains '\\' (a Windows separator would make it ambiguous)");
  if (name.startsWith('/')) throw unsafe(shown, 'absolute path');
  if (DRIVE_RE.test(name)) throw unsafe(shown, 'name starts with a drive letter');
  const slash = name.endsWith('/');
  const path = slash ? name.slice(0, -1) : name;
  const parts = path.split('/');
  if (parts.length > MAX_DEPTH) throw unsafe(shown, `nests deeper than ${MAX_DEPTH} levels`);
  for (const part of parts) {
    if (part === '..') throw unsafe(shown, "path climbs out with '..'");
    // Only names with a part starting with '.' come here (the fast path above takes no such name).
    if (part.charCodeAt(0) === 0x2e && WORK_NAME_RE.test(part)) {
      throw unsafe(shown, `'${part}' has the name of unpack's own work folders (${WORK_NAME_SHOWN}), which a later unpack into that folder would take for a killed unpack's leftovers and remove`);
    }
    // Perf: the full check (Unicode, byte length) only for parts that need it; most are short ASCII.
    if (part.length > 0 && part !== '.' && part.length <= 255 && SIMPLE_RE.test(part)) continue;
    const why = nameProblem(part);
    if (why) throw unsafe(shown, why);
  }
  return { path, slash };
}

/** Type and permission bits from the external attributes (unix mode when made on unix). */
function entryType(e: RawEntry, slash: boolean, shown: string): { type: EntryType; perm: number | undefined } {
  const mode = (e.externalAttr >>> 16) & 0xffff;
  const unix = e.madeBy >> 8 === HOST_UNIX && mode !== 0;
  if (!unix) {
    return { type: slash || (e.externalAttr & DOS_DIR_ATTR) !== 0 ? 'dir' : 'file', perm: undefined };
  }
  const fmt = mode & S_IFMT;
  let type: EntryType;
  if (fmt === S_IFREG) type = 'file';
  else if (fmt === S_IFDIR) type = 'dir';
  else if (fmt === S_IFLNK) type = 'symlink';
  else if (fmt === 0) type = slash ? 'dir' : 'file';
  else {
    const kind = fmt === 0o010000 ? 'a FIFO' : fmt === 0o020000 ? 'a character device' : fmt === 0o060000 ? 'a block device' : fmt === 0o140000 ? 'a socket' : `of unknown type 0o${fmt.toString(8)}`;
    throw refused(shown, `is ${kind}; only files, directories and symlinks are extracted`);
  }
  if (slash && type !== 'dir') throw refused(shown, `name ends with '/' but its mode says ${type}`);
  return { type, perm: mode & 0o7777 };
}

/**
 * The type of every path an archive has named so far, explicit or implied as a parent, so each
 * new entry can be refused when it names a path twice or lies under a file or symlink of the
 * archive (shared by the zip and tar readers).
 */
export class PathKinds {
  /**
   * Directory ('' for the root) -> the kind of each name in it; 'implied' is a directory nobody named.
   * Perf: one small map per directory, not one map of every path: entries come grouped by
   * directory, so the lookups stay in the current directory's map (hot in the cache) instead of
   * probing a map of all 83,730 paths of the Linux tree twice per entry, where perf (one unpack
   * of its .tar) put 74 ms of the main thread. The walk alone of that .tar (main thread CPU, a
   * fresh process each, 8 interleaved runs, load 10-14 on 2 cores) took 330-530 ms (median 465)
   * before, 310-470 ms (median 390) so.
   */
  private readonly dirs = new Map<string, Map<string, EntryType | 'implied'>>();
  private lastParent: string | undefined;
  private lastNames: Map<string, EntryType | 'implied'> | undefined;
  /** Directories implied by the paths under them and never named themselves. */
  implied = 0;

  /**
   * `fold` maps a path to the key the target filesystem sees, where it folds case or Unicode
   * normalization (then 'A' and 'a', or NFC and NFD forms, are one path: CVE-2021-37712).
   */
  constructor(private readonly fold?: (path: string) => string) {}

  get(rawPath: string): EntryType | 'implied' | undefined {
    const path = this.fold ? this.fold(rawPath) : rawPath;
    const cut = path.lastIndexOf('/');
    return this.dirs.get(cut < 0 ? '' : path.slice(0, cut))?.get(cut < 0 ? path : path.slice(cut + 1));
  }

  /** Records `path` as `type`, or throws naming `shown` when that clashes with what came before. */
  add(rawPath: string, type: EntryType, shown: string): void {
    const path = this.fold ? this.fold(rawPath) : rawPath;
    const lastCut = path.lastIndexOf('/');
    const parentPath = lastCut < 0 ? '' : path.slice(0, lastCut);
    let names = this.lastNames;
    // Parents must be directories (explicit or implied); a path may be named once.
    // Perf: entries come grouped by directory; when the parent is the previous entry's parent,
    // every prefix of it is already known to be a directory (a later clash is caught as a duplicate).
    if (names === undefined || parentPath !== this.lastParent) {
      let from = 0;
      let inDir = this.namesOf('');
      for (let cut = path.indexOf('/'); cut >= 0; cut = path.indexOf('/', from)) {
        const name = path.slice(from, cut);
        const k = inDir.get(name);
        if (k === undefined) {
          inDir.set(name, 'implied');
          this.implied++;
        } else if (k !== 'dir' && k !== 'implied') throw unsafe(shown, `lies under '${path.slice(0, cut)}', which is a ${k} in this archive`);
        inDir = this.namesOf(path.slice(0, cut));
        from = cut + 1;
      }
      names = inDir;
      this.lastParent = parentPath;
      this.lastNames = names;
    }
    const name = lastCut < 0 ? path : path.slice(lastCut + 1);
    const prev = names.get(name);
    if (prev === 'implied') {
      if (type !== 'dir') throw unsafe(shown, `is a ${type}, but earlier entries lie under it as a directory`);
      this.implied--;
    } else if (prev !== undefined) {
      throw unsafe(shown, `duplicate entry (${prev} and ${type})`);
    }
    names.set(name, type);
  }

  private namesOf(dir: string): Map<string, EntryType | 'implied'> {
    let m = this.dirs.get(dir);
    if (m === undefined) {
      m = new Map();
      this.dirs.set(dir, m);
    }
    return m;
  }
}

/** How a case-folding, normalizing filesystem (ext4 casefold, APFS, NTFS) compares names. */
export function foldName(path: string): string {
  return path.normalize('NFD').toLowerCase();
}

export function judgeEntries(raw: readonly RawEntry[], cdOffset: number, limits: Limits): Judged {
  const warnings: Judged['warnings'] = [];
  const entries: ArchiveEntry[] = [];
  const kinds = new PathKinds();
  let totalSize = 0;
  for (const e of raw) {
    if (e.name === undefined) {
      throw new UnsafePathError(`archive entry ${e.index} ('${escapeControl(e.badNameBytes ?? Buffer.alloc(0))}'): name is not valid UTF-8`, {
        hint: 'treecast reads names as UTF-8 only, so that every name means one path',
      });
    }
    const name = e.name;
    const shown = name.length > 200 ? `${name.slice(0, 200)}...` : name;
    if (e.flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION)) throw refused(shown, 'is encrypted');
    const { path, slash } = entryPath(name);
    const { type, perm: rawPerm } = entryType(e, slash, shown);
    let perm = rawPerm;
    if (perm !== undefined && perm & 0o7000) {
      warnings.push({ code: 'ARCHIVE_MODE_STRIPPED', message: `'${shown}': setuid/setgid/sticky bits stripped (mode 0o${perm.toString(8)})`, path });
      perm &= 0o777;
    }
    if (type === 'file' || type === 'symlink' || e.size > 0 || e.compressedSize > 0) {
      if (e.method !== METHOD_STORE && e.method !== METHOD_DEFLATE) throw refused(shown, `uses compression method ${e.method}; only store (0) and deflate (8) are supported`);
    }
    if (type === 'dir' && (e.size > 0 || e.compressedSize > 0)) throw refused(shown, 'is a directory with data');
    if (e.method === METHOD_STORE && e.size !== e.compressedSize) {
      throw refused(shown, `sizes disagree: stored entry of ${e.size} bytes with ${e.compressedSize} bytes of data`);
    }
    if (type === 'symlink' && e.size > 4095) throw refused(shown, `symlink target of ${e.size} bytes is too long`);
    if (e.size > limits.maxRatio * Math.max(e.compressedSize, 1) && e.size > 0) {
      throw refused(shown, `compression ratio ${(e.size / Math.max(1, e.compressedSize)).toFixed(0)}:1 exceeds --max-ratio ${limits.maxRatio}`);
    }
    totalSize += e.size;
    if (totalSize > limits.maxSize) throw refused(shown, `total size ${totalSize} bytes exceeds --max-size ${limits.maxSize}`);

    kinds.add(path, type, shown);
    entries.push({
      index: e.index,
      path,
      rawName: name,
      type,
      perm,
      mtime: e.mtime,
      method: e.method,
      crc: e.crc >>> 0,
      compressedSize: e.compressedSize,
      size: e.size,
      localOffset: e.localOffset,
      nameLength: e.nameLength,
      limit: 0,
    });
  }
  assignLimits(entries, cdOffset);
  return { entries, warnings, totalSize };
}

/**
 * Each entry's local header, name and data must lie before the next entry's local header (by
 * offset) and before the central directory. Two entries at the same offset, or one whose minimal
 * extent reaches into the next, overlap (the classic zip bomb). The extract op re-checks with the
 * real local header length.
 */
function assignLimits(entries: ArchiveEntry[], cdOffset: number): void {
  const byOffset = entries.slice().sort((a, b) => a.localOffset - b.localOffset);
  for (let i = 0; i < byOffset.length; i++) {
    const e = byOffset[i]!;
    const next = byOffset[i + 1];
    const limit = next ? next.localOffset : cdOffset;
    const minEnd = e.localOffset + LOCAL_HEADER_SIZE + e.nameLength + e.compressedSize;
    if (minEnd > limit) {
      const why = next
        ? next.localOffset === e.localOffset
          ? `shares its local data with entry '${next.rawName}' (overlapping entries)`
          : `data overlaps entry '${next.rawName}' (overlapping entries)`
        : 'data runs into the central directory (truncated or overlapping)';
      throw new ArchiveError(`archive entry '${e.rawName}': ${why}`, { path: e.path });
    }
    e.limit = limit;
  }
}

/**
 * Judges a symlink target. Always refused: an empty target, NUL, over 4,095 bytes. Otherwise any
 * target is kept, as tar, bsdtar and unzip keep them (a Python venv links `bin/python3` to an
 * absolute path): extraction never follows or writes through a link, since links are made after
 * every file and no entry may lie under one. With `safeLinks` (for untrusted archives whose links
 * should not point anywhere else once extracted), refused when absolute, in Windows syntax, when
 * it climbs above the extraction root, or when '..' follows a name (which could climb out through
 * another symlink). '.' and empty parts are no-ops and allowed.
 */
export function symlinkTargetRule(linkPath: string, target: string, safeLinks = false): string | null {
  const basic = symlinkTargetProblem(target);
  if (basic) return basic;
  if (!safeLinks) return null;
  if (target.startsWith('/')) return `symlink target '${target}' is absolute`;
  if (target.includes('\\') || DRIVE_RE.test(target)) return `symlink target '${target}' uses Windows path syntax`;
  const depth = linkPath.split('/').length - 1;
  let ups = 0;
  let named = false;
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (named) return `symlink target '${target}' has '..' after a name (it could climb out through another symlink)`;
      ups++;
    } else named = true;
  }
  if (ups > depth) return `symlink target '${target}' points outside the extraction directory`;
  return null;
}
