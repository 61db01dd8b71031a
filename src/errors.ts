/**
 * Typed errors with stable codes. Every failure the CLI can report is one of these classes; the
 * `code` is part of the public API (scripts match on it), the `exitCode` is what the CLI exits with.
 */

import { statSync } from 'node:fs';
import { dirname } from 'node:path';
import { escapeControl } from './core/display.js';

/** Exit codes of the `treecast` command, documented in the README. */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  notFound: 3,
  conflict: 4,
  integrity: 5,
  unsafeInput: 6,
  io: 7,
  remote: 8,
  busy: 9,
  interrupted: 130,
} as const;

export interface ErrorDetails {
  path?: string;
  digest?: string;
  hint?: string;
  cause?: unknown;
  /** Lines listed under the message (one path or key each); printed each on its own line, each escaped. */
  lines?: readonly string[];
}

export class TreecastError extends Error {
  readonly code: string = 'ERR_TREECAST';
  readonly exitCode: number = ExitCode.failure;
  readonly path?: string;
  readonly digest?: string;
  readonly hint?: string;
  /** The message as the lines a terminal shows: the first line, then `details.lines`. */
  readonly messageLines: readonly string[];

  constructor(message: string, details: ErrorDetails = {}) {
    const lines = details.lines ?? [];
    super([message, ...lines].join('\n'), details.cause === undefined ? undefined : { cause: details.cause });
    this.messageLines = [message, ...lines];
    this.name = new.target.name;
    this.path = details.path;
    this.digest = details.digest;
    this.hint = details.hint;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, path: this.path, digest: this.digest, hint: this.hint };
  }
}

/** Bad options or arguments, found before any I/O. */
export class UsageError extends TreecastError {
  override readonly code = 'ERR_TREECAST_USAGE';
  override readonly exitCode = ExitCode.usage;
}

export class InvalidDigestError extends TreecastError {
  override readonly code = 'ERR_TREECAST_INVALID_DIGEST';
  override readonly exitCode = ExitCode.usage;
}

export class InvalidRefNameError extends TreecastError {
  override readonly code = 'ERR_TREECAST_INVALID_REF';
  override readonly exitCode = ExitCode.usage;
}

export class BlobNotFoundError extends TreecastError {
  override readonly code = 'ERR_TREECAST_BLOB_NOT_FOUND';
  override readonly exitCode = ExitCode.notFound;
}

export class RefNotFoundError extends TreecastError {
  override readonly code = 'ERR_TREECAST_REF_NOT_FOUND';
  override readonly exitCode = ExitCode.notFound;
}

/** `refs --rename OLD NEW` where NEW is already a ref (and no `--force`). */
export class RefExistsError extends TreecastError {
  override readonly code = 'ERR_TREECAST_REF_EXISTS';
  override readonly exitCode = ExitCode.usage;
}

/** A path a tree does not hold (`ls REF PATH`). */
export class PathNotFoundError extends TreecastError {
  override readonly code = 'ERR_TREECAST_PATH_NOT_FOUND';
  override readonly exitCode = ExitCode.notFound;
}

/** One name tried on a remote: no entry, or an entry naming blobs the server lacks. */
export interface RemoteRefMiss {
  name: string;
  key: string;
  reason: 'absent' | 'incomplete';
  detail?: string;
  /** With 'incomplete': a blob the entry reaches that the server lacks. */
  digest?: string;
}

function missLine(t: RemoteRefMiss): string {
  if (t.reason === 'absent') return `  ${t.name} (ac/${t.key}): no entry`;
  return `  ${t.name} (ac/${t.key}): ${t.digest !== undefined ? `entry names blob ${t.digest}, which the server lacks` : 'entry names blobs the server lacks'}`;
}

/**
 * No name resolved to a complete tree, and one of them has an entry whose tree reaches a blob the
 * server lacks (evicted, say): a missing blob, named, as a blob missing anywhere else is
 * (ERR_TREECAST_BLOB_NOT_FOUND, exit 3), not a name that does not exist.
 */
export class RemoteRefIncompleteError extends BlobNotFoundError {
  readonly tried: RemoteRefMiss[];
  constructor(tried: RemoteRefMiss[], server: string, details: ErrorDetails = {}) {
    const first = tried.find((t) => t.reason === 'incomplete')!;
    const blob = first.digest !== undefined ? `blob ${first.digest}` : 'a blob';
    super(`ref '${first.name}' on ${server} names ${blob}, which the server lacks; no name tried resolved to a whole tree:`, {
      lines: tried.map(missLine),
      hint: 'push the tree again (`treecast push DIR URL --ref NAME`) to put its blobs back, or name another ref with --fallback',
      ...(first.digest !== undefined ? { digest: first.digest } : {}),
      ...details,
    });
    this.tried = tried;
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), tried: this.tried };
  }
}

/** The error for names that all missed: a missing blob when an entry was there, else no ref. */
export function remoteRefMissError(tried: RemoteRefMiss[], server: string): TreecastError {
  return tried.some((t) => t.reason === 'incomplete') ? new RemoteRefIncompleteError(tried, server) : new RemoteRefNotFoundError(tried, server);
}

/** No name (first or fallback) resolved to a complete tree on the remote. */
export class RemoteRefNotFoundError extends TreecastError {
  override readonly code = 'ERR_TREECAST_REMOTE_REF_NOT_FOUND';
  override readonly exitCode = ExitCode.notFound;
  readonly tried: RemoteRefMiss[];
  constructor(tried: RemoteRefMiss[], server: string, details: ErrorDetails = {}) {
    const lines = tried.map(missLine);
    super(`no ref of ${tried.map((t) => `'${t.name}'`).join(', ')} on ${server}:`, {
      lines,
      hint: 'push one with `treecast push DIR URL --ref NAME`',
      ...details,
    });
    this.tried = tried;
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), tried: this.tried };
  }
}

/** Bytes whose SHA-256 or size disagree with the digest they were stored or sent under. */
export class DigestMismatchError extends TreecastError {
  override readonly code = 'ERR_TREECAST_DIGEST_MISMATCH';
  override readonly exitCode = ExitCode.integrity;
}

/**
 * An entry of the store that is not what the store made there (a symbolic link planted as a blob,
 * a blob shard folder, a ref, an action cache entry, a checkout record, a lock, a stat cache entry,
 * a completeness record, or one of their folders): never followed, named by its path; `treecast
 * verify --repair` removes it (never its target). A blob file whose bytes disagree with its name is
 * a DigestMismatchError instead.
 */
export class StoreDamagedError extends TreecastError {
  override readonly code = 'ERR_TREECAST_STORE_DAMAGED';
  override readonly exitCode = ExitCode.integrity;
}

/**
 * The folder given as the store holds files and is not a store: treecast makes a store only in a
 * new or empty folder, since it writes its own folders there and gc and verify --repair remove
 * files in them.
 */
export class NotAStoreError extends TreecastError {
  override readonly code = 'ERR_TREECAST_NOT_A_STORE';
  override readonly exitCode = ExitCode.io;
}

/** A `Directory` message that is not canonical or names entries unsafely. */
export class InvalidTreeError extends TreecastError {
  override readonly code = 'ERR_TREECAST_INVALID_TREE';
  override readonly exitCode = ExitCode.unsafeInput;
}

/** An action cache entry (REAPI `ActionResult`) that is malformed or names blobs unsafely. */
export class InvalidActionResultError extends TreecastError {
  override readonly code = 'ERR_TREECAST_INVALID_ACTION_RESULT';
  override readonly exitCode = ExitCode.unsafeInput;
}

/** A name from a tree, an archive or the network that would escape or confuse the target. */
export class UnsafePathError extends TreecastError {
  override readonly code = 'ERR_TREECAST_UNSAFE_PATH';
  override readonly exitCode = ExitCode.unsafeInput;
}

/** Checkout would overwrite or remove files changed since the last checkout. */
export class LocalChangesError extends TreecastError {
  override readonly code = 'ERR_TREECAST_LOCAL_CHANGES';
  override readonly exitCode = ExitCode.conflict;
  readonly paths: string[];
  /**
   * `untracked`: the paths are entries the tree does not have, inside a directory where the tree
   * has a file or symlink; --force keeps such entries, so only --clean (or the user) removes them.
   */
  constructor(paths: string[], details: ErrorDetails = {}, untracked = false) {
    const shown = paths.slice(0, 20).map((p) => `  ${escapeControl(p)}`);
    const more = paths.length > 20 ? [`  ... and ${paths.length - 20} more`] : [];
    super(
      untracked
        ? `checkout --force would remove ${paths.length} untracked path(s) (not in the tree) to put a file or symlink where their directory is:`
        : `checkout would overwrite ${paths.length} locally changed path(s):`,
      {
        lines: [...shown, ...more],
        hint: untracked
          ? '--force keeps files the tree does not have: move them away, or add --clean to remove them'
          : 'commit them with `treecast snapshot`, move them away, or pass --force to discard them',
        ...details,
      },
    );
    this.paths = paths;
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), paths: this.paths };
  }
}

/** Snapshot input that cannot be captured faithfully (unreadable, not UTF-8, changed while read). */
export class CaptureError extends TreecastError {
  override readonly code = 'ERR_TREECAST_CAPTURE';
  override readonly exitCode = ExitCode.io;
}

export class SymlinkLoopError extends TreecastError {
  override readonly code = 'ERR_TREECAST_SYMLINK_LOOP';
  override readonly exitCode = ExitCode.io;
}

/** A special file (socket, FIFO, device) met with --strict. */
export class SpecialFileError extends TreecastError {
  override readonly code = 'ERR_TREECAST_SPECIAL_FILE';
  override readonly exitCode = ExitCode.unsafeInput;
}

/** The target directory cannot be used (a file, not writable, ...). */
export class TargetError extends TreecastError {
  override readonly code = 'ERR_TREECAST_TARGET';
  override readonly exitCode = ExitCode.io;
}

/** Another treecast process is writing into the same target directory. */
export class TargetBusyError extends TreecastError {
  override readonly code = 'ERR_TREECAST_TARGET_BUSY';
  override readonly exitCode = ExitCode.busy;
}

/** An operating-system error while reading or writing, with the path named. */
export class FileSystemError extends TreecastError {
  override readonly code: string = 'ERR_TREECAST_FS';
  override readonly exitCode = ExitCode.io;
  readonly syscallCode?: string;
  constructor(message: string, details: ErrorDetails & { syscallCode?: string } = {}) {
    super(message, details);
    this.syscallCode = details.syscallCode;
  }
}

export class NoSpaceError extends FileSystemError {
  override readonly code = 'ERR_TREECAST_NO_SPACE';
}

export class InterruptedError extends TreecastError {
  override readonly code = 'ERR_TREECAST_INTERRUPTED';
  override readonly exitCode = ExitCode.interrupted;
}

/** A remote server failed, refused, or sent something unusable. */
export class RemoteError extends TreecastError {
  override readonly code: string = 'ERR_TREECAST_REMOTE';
  override readonly exitCode = ExitCode.remote;
  readonly status?: number;
  constructor(message: string, details: ErrorDetails & { status?: number } = {}) {
    super(message, details);
    this.status = details.status;
  }
}

/** An archive that is malformed or hostile. */
export class ArchiveError extends TreecastError {
  override readonly code = 'ERR_TREECAST_ARCHIVE';
  override readonly exitCode = ExitCode.unsafeInput;
}

/** Wraps a Node.js system error (`err.code` like ENOENT) into a FileSystemError naming the path. */
export function fsError(err: unknown, action: string, path: string): TreecastError {
  if (err instanceof TreecastError) return err;
  const e = err as NodeJS.ErrnoException;
  const sys = e?.code ?? 'EUNKNOWN';
  let message = `${action} ${path}: ${sys}${e?.message ? ` (${e.message.replace(/^\w+: /, '')})` : ''}`;
  if (sys === 'ENOSPC' || sys === 'EDQUOT') {
    return new NoSpaceError(message, { path, cause: err, syscallCode: sys, hint: 'free some space and run the same command again' });
  }
  const blocker = notDirectoryParent(err, path);
  if (blocker === undefined) return new FileSystemError(message, { path, cause: err, syscallCode: sys });
  message += `: ${blocker} is not a directory`;
  return new FileSystemError(message, { path, cause: err, syscallCode: sys, hint: `move ${blocker} away or choose another path` });
}

/**
 * For an ENOTDIR on `path`: the outermost of its parents that exists and is not a directory (a
 * file where `a/file/sub` needs a directory), so the message says which one is in the way.
 * Undefined for any other error, or when every parent is a directory (`path` itself is the file).
 */
export function notDirectoryParent(err: unknown, path: string): string | undefined {
  if ((err as NodeJS.ErrnoException)?.code !== 'ENOTDIR') return undefined;
  const parents: string[] = [];
  for (let p = dirname(path); p !== dirname(p) && p !== '.'; p = dirname(p)) parents.unshift(p);
  for (const p of parents) {
    try {
      if (!statSync(p).isDirectory()) return p;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

// ------------------------------------------------------------ crossing thread boundaries

const classesByCode = new Map<string, new (message: string, details?: ErrorDetails) => TreecastError>();
for (const C of [
  UsageError, InvalidDigestError, InvalidRefNameError, BlobNotFoundError, RefNotFoundError, PathNotFoundError, DigestMismatchError,
  InvalidTreeError, UnsafePathError, CaptureError, SymlinkLoopError, SpecialFileError, TargetError, TargetBusyError, FileSystemError,
  NoSpaceError, InterruptedError, RemoteError, ArchiveError, InvalidActionResultError, RefExistsError, StoreDamagedError,
  NotAStoreError,
]) {
  classesByCode.set(new C('').code, C);
}

export interface SerializedError {
  code?: string;
  message: string;
  path?: string;
  digest?: string;
  hint?: string;
  syscallCode?: string;
  paths?: string[];
  stack?: string;
}

/** Turns any thrown value into plain data that can be posted between threads. */
export function serializeError(err: unknown): SerializedError {
  const e = err as TreecastError & NodeJS.ErrnoException & { syscallCode?: string; paths?: string[] };
  if (!(err instanceof Error)) return { message: String(err) };
  return {
    code: e instanceof TreecastError ? e.code : undefined,
    message: e.message,
    path: e.path,
    digest: e instanceof TreecastError ? e.digest : undefined,
    hint: e instanceof TreecastError ? e.hint : undefined,
    syscallCode: e instanceof TreecastError ? e.syscallCode : (err as NodeJS.ErrnoException).code,
    paths: e.paths,
    stack: e.stack,
  };
}

/** Rebuilds the typed error a worker threw. */
export function reviveError(s: SerializedError): Error {
  if (s.code === 'ERR_TREECAST_LOCAL_CHANGES') return new LocalChangesError(s.paths ?? [], { path: s.path, hint: s.hint });
  const C = s.code ? classesByCode.get(s.code) : undefined;
  if (C) {
    const err = C === FileSystemError || C === NoSpaceError
      ? new (C as typeof FileSystemError)(s.message, { path: s.path, digest: s.digest, hint: s.hint, syscallCode: s.syscallCode })
      : new C(s.message, { path: s.path, digest: s.digest, hint: s.hint });
    return err;
  }
  const err = new Error(s.message) as NodeJS.ErrnoException;
  if (s.syscallCode) err.code = s.syscallCode;
  if (s.path) err.path = s.path;
  return err;
}
