/**
 * What every command that writes into a user's directory (checkout, unpack) does first:
 *
 * 1. Refuse a target that contains the store or lies inside it, before any I/O that changes
 *    anything. Paths are compared as real paths (symlinks of the existing prefix resolved), so
 *    `..` or a symlinked spelling cannot dodge the check.
 * 2. Take a lock per target, so two processes never write one directory at once, whichever store
 *    each uses. The second fails at once (TargetBusyError) naming the holder's pid. The lock is a
 *    file in a private folder of the user's in the temp dir (`treecast-locks-UID`, lockDirForTarget),
 *    never in the user's tree and never in a store: two commands into one directory from two
 *    stores see each other. It is keyed by the target's real path (so `..` and symlinked spellings
 *    meet, and a target that does not exist yet is locked before it is made), and, when the target
 *    exists, by its device and inode as well (so a directory reached through two mounts meets too).
 *    root writing into a directory another user owns locks in that user's folder, where the owner's
 *    own commands lock. A lock whose process is gone (pid not alive, or alive but started at
 *    another time: a reused pid) is stale and taken over.
 * 3. Keep `gc` from removing what a checkout reads: a checkout also writes a pin into the store's
 *    `locks/` folder naming the tree it checks out (`checkout-<target key>.lock`, so two checkouts
 *    from one store meet there too, whatever temp dir each sees), and `gc` holds `gc.lock`
 *    in the same folder while it works, treating every live pin's tree as reachable. Each side
 *    writes its own lock before it looks for the other's, so one of them always sees the other: gc
 *    keeps the tree, or the checkout refuses to start. A snapshot (import, pull) holds a lock of
 *    its own the same way, and gc refuses to run while one is live.
 *
 * Nothing in the store's `locks/` is read, written or removed through a symbolic link: the folder
 * is looked at by lstat on every use (makeStoreFolders) and a lock read with O_NOFOLLOW, so a link
 * planted as the folder or as a lock (which would have a lock written into, or a pin or gc's lock
 * read from, any file it points at) is a StoreDamagedError naming it; `verify --repair` removes it.
 */
import * as fs from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { hostname, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { StoreDamagedError, TargetBusyError, TargetError, fsError } from '../errors.js';
import { makeDirectories } from './make-dirs.js';
import { makeStoreFolders, readFileNoFollow, readStoreEntry } from '../store/local.js';

export interface TargetGuard {
  /** The target as a real path (what the lock is keyed by). */
  readonly realTarget: string;
  /** Gives the lock back (idempotent). */
  release(): void;
}

/**
 * Checks `targetAbs` against the store and locks it. `storeRoot` is the store the command uses
 * (for unpack, which has none, the configured default store); the lock does not depend on it. With
 * `root` (a checkout), the tree is pinned in that store against gc.
 */
export function guardTarget(targetAbs: string, storeRoot: string, command: string, root?: string): TargetGuard {
  const realTarget = realPathOf(targetAbs);
  refuseStoreOverlap(targetAbs, realTarget, storeRoot);
  const guard = lockTargetDir(realTarget, command);
  if (root === undefined) return guard;
  try {
    const lockDir = lockDirFor(storeRoot);
    // Keyed by the target too: two checkouts from one store meet here even when they see
    // different temp dirs (a service with a private /tmp, say), as they did before the lock moved.
    const pin = lockTarget(realTarget, join(lockDir, `${PIN_PREFIX}${targetKey(realTarget)}.lock`), command, root, storeOf(lockDir, storeRoot));
    refuseDuringGc(lockDir, storeRoot, pin, realTarget, `${realTarget} was left unchanged`);
    return both(guard, pin);
  } catch (e) {
    guard.release();
    throw e;
  }
}

/**
 * The lock on a target directory itself, the same whichever store a command uses: by real path,
 * and when the directory exists also by device and inode (two mounts of one directory have two
 * real paths). The path lock comes first and is what keeps apart two commands making a target
 * that does not exist yet (it has no inode until one of them makes it). So a target the first
 * command finds missing is held by its path alone: a second one reaching it through another mount
 * while the first runs is not kept out.
 */
function lockTargetDir(realTarget: string, command: string): TargetGuard {
  const dir = lockDirForTarget(realTarget);
  const byPath = lockTarget(realTarget, join(dir, `${targetKey(realTarget)}.lock`), command);
  try {
    const st = statOrUndefined(realTarget);
    if (!st?.isDirectory()) return byPath;
    return both(byPath, lockTarget(realTarget, join(dir, `dev-${st.dev}-ino-${st.ino}.lock`), command));
  } catch (e) {
    byPath.release();
    throw e;
  }
}

function targetKey(realTarget: string): string {
  return createHash('sha256').update(realTarget).digest('hex');
}

function statOrUndefined(path: string): fs.Stats | undefined {
  try {
    return fs.statSync(path, { throwIfNoEntry: false });
  } catch (e) {
    throw fsError(e, 'cannot stat', path);
  }
}

function both(a: TargetGuard, b: TargetGuard): TargetGuard {
  return {
    realTarget: a.realTarget,
    release() {
      b.release();
      a.release();
    },
  };
}

/**
 * The folder of a target's locks: the user's private `TMPDIR/treecast-locks-UID`. Run as root on
 * a directory another user owns (the target, or the nearest existing folder above it when it does
 * not exist yet), that user's folder (made for them, theirs and private, when absent): the owner's
 * own commands lock there, so root and the owner never write one directory at once. Two users
 * neither of whom is root nor the owner lock apart (each can only write their own folder).
 */
function lockDirForTarget(realTarget: string): string {
  const uid = process.getuid?.();
  if (uid === 0) {
    const owner = ownerOf(realTarget);
    if (owner && owner.uid !== 0) return privateDirOf('treecast-locks', 'lock', owner.uid, owner.gid)!;
  }
  return privateTempDir('treecast-locks', 'lock')!;
}

/** The owner of `realPath`, or of the nearest folder above it that exists. */
function ownerOf(realPath: string): { uid: number; gid: number } | undefined {
  for (let cur = realPath; ; cur = dirname(cur)) {
    const st = statOrUndefined(cur);
    if (st) return { uid: st.uid, gid: st.gid };
    if (dirname(cur) === cur) return undefined;
  }
}

const GC_LOCK = 'gc.lock';
/** Locks of commands adding blobs to the store (snapshot, import, pull): gc refuses to run while one is live. */
const WRITER_PREFIX = 'writer-';
/** A checkout's pin of the tree it reads, per target: gc keeps that tree while the checkout is live. */
const PIN_PREFIX = 'checkout-';

/**
 * A snapshot's hold on its store against gc. A snapshot keeps a blob it finds already stored
 * without writing it again, and names it in its tree only at the end: a gc meanwhile saw that blob
 * unreachable (and old) and removed it, leaving a ref to a tree the store lacks. So, as with a
 * checkout's tree: the snapshot writes its lock, then refuses to start while gc runs; gc writes its
 * own, then refuses to run while a snapshot holds one (lockStoreForGc).
 */
export function guardStoreWriter(storeRoot: string, command: string): TargetGuard {
  const lockDir = lockDirFor(storeRoot);
  const lockPath = join(lockDir, `${WRITER_PREFIX}${process.pid}-${randomBytes(6).toString('hex')}.lock`);
  const guard = lockTarget(resolve(storeRoot), lockPath, command, undefined, storeOf(lockDir, storeRoot));
  refuseDuringGc(lockDir, storeRoot, guard, resolve(storeRoot), 'nothing was recorded');
  return guard;
}

function refuseDuringGc(lockDir: string, storeRoot: string, guard: TargetGuard, path: string, outcome: string): void {
  let gc: LockBody | undefined;
  try {
    gc = readBody(join(lockDir, GC_LOCK), storeOf(lockDir, storeRoot));
  } catch (e) {
    guard.release();
    throw e;
  }
  if (!gc || !holderAlive(gc)) return;
  guard.release();
  throw new TargetBusyError(`the store ${resolve(storeRoot)} is being collected by treecast gc (pid ${gc.pid}); ${outcome}`, {
    path,
    hint: `wait for process ${gc.pid} to finish, then run the same command again`,
  });
}

export interface GcGuard {
  /** Trees (formatted digests) live checkouts are reading: gc must keep them. */
  readonly pinned: string[];
  release(): void;
}

/**
 * Takes the store's gc lock (a second gc fails naming the first), then reads every live target
 * lock for the tree its checkout reads. A checkout that locks after this point sees the gc lock
 * and refuses to start (guardTarget), so `pinned` is every tree a checkout may still read.
 */
export function lockStoreForGc(storeRoot: string): GcGuard {
  const lockDir = lockDirFor(storeRoot);
  const store = storeOf(lockDir, storeRoot);
  const guard = lockTarget(resolve(storeRoot), join(lockDir, GC_LOCK), 'gc', undefined, store);
  const pinned: string[] = [];
  try {
    for (const name of fs.readdirSync(lockDir)) {
      if (!name.endsWith('.lock') || name === GC_LOCK) continue;
      // A link planted as a lock in the store is never read (readBody), nor removed here as a stale
      // lock: gc stops, naming it (verify --repair removes the link itself).
      const b = readBody(join(lockDir, name), store);
      if (name.startsWith(WRITER_PREFIX)) {
        // A snapshot still running may use any stored blob; a dead one's lock is only left over. (The
        // private fallback folder holds the locks of every store the user cannot write: only this one's count.)
        if (b === undefined || !holderAlive(b)) fs.rmSync(join(lockDir, name), { force: true });
        else if (b.target === resolve(storeRoot)) throw new TargetBusyError(`the store ${resolve(storeRoot)} is in use by treecast ${b.command} (pid ${b.pid}); gc removed nothing`, {
          path: resolve(storeRoot),
          hint: `wait for process ${b.pid} to finish, then run gc again`,
        });
      } else if (name.startsWith(PIN_PREFIX) && (b === undefined || !holderAlive(b))) {
        // The pin of a checkout that was killed: nothing reads its tree any more.
        fs.rmSync(join(lockDir, name), { force: true });
      } else if (b?.root !== undefined && holderAlive(b)) pinned.push(b.root);
    }
  } catch (e) {
    guard.release();
    throw fsError(e, 'cannot read locks', lockDir);
  }
  return { pinned, release: () => guard.release() };
}

/**
 * The real path of `p` even when it does not exist yet: the longest existing prefix is resolved
 * (symlinks followed) and the missing rest appended.
 */
export function realPathOf(p: string): string {
  const abs = resolve(p);
  const rest: string[] = [];
  let cur = abs;
  for (;;) {
    try {
      return join(fs.realpathSync.native(cur), ...rest.reverse());
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw fsError(e, 'cannot resolve', cur);
      const parent = dirname(cur);
      if (parent === cur) return abs;
      rest.push(basename(cur));
      cur = parent;
    }
  }
}

function isWithin(inner: string, outer: string): boolean {
  return inner === outer || outer === '/' || inner.startsWith(`${outer}/`);
}

function refuseStoreOverlap(targetAbs: string, realTarget: string, storeRoot: string): void {
  const realStore = realPathOf(storeRoot);
  const where = realTarget === targetAbs ? targetAbs : `${targetAbs} (really ${realTarget})`;
  if (isWithin(realStore, realTarget)) {
    throw new TargetError(`refusing to write into ${where}: it contains the store ${realStore}`, {
      path: targetAbs,
      hint: 'choose a target outside the store, or move the store (--store, TREECAST_STORE)',
    });
  }
  if (isWithin(realTarget, realStore)) {
    throw new TargetError(`refusing to write into ${where}: it lies inside the store ${realStore}`, {
      path: targetAbs,
      hint: 'choose a target outside the store',
    });
  }
}

/**
 * `STORE/locks`, created when absent. When the store cannot be written (a read-only home, say,
 * or a `locks` folder another user made), a private directory under the system temp dir, so an
 * unpack without a usable store still locks.
 */
function lockDirFor(storeRoot: string): string {
  const root = resolve(storeRoot);
  const dir = join(root, 'locks');
  try {
    makeDirectories(root);
    // Made or found a real folder on every use, never entered through a link (StoreDamagedError).
    makeStoreFolders(root, dir, dir, 'the folder of locks');
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
    return dir;
  } catch (e) {
    if (e instanceof StoreDamagedError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EROFS' && code !== 'EPERM') throw fsError(e, 'cannot create lock directory', dir);
  }
  return privateTempDir('treecast-locks', 'lock')!;
}

/** The store's root when `lockDir` is the store's `locks/` (not the private fallback), for lock reads to refuse a link as damage. */
function storeOf(lockDir: string, storeRoot: string): string | undefined {
  const root = resolve(storeRoot);
  return lockDir === join(root, 'locks') ? root : undefined;
}

/**
 * `TMPDIR/PREFIX-UID`, made private (0700) when absent: where a user keeps what a store it cannot
 * write would hold (locks, checkout records). A shared temp dir: it is used only when it is this
 * user's and private, never through a planted symlink. With `create` false, an absent one is
 * undefined.
 */
export function privateTempDir(prefix: string, what: string, create = true): string | undefined {
  const uid = process.getuid?.();
  return privateDirOf(prefix, what, uid, uid === undefined ? undefined : process.getgid!(), create);
}

/**
 * `TMPDIR/PREFIX-UID` of user `uid` (this process's own, or, run as root, another user's: made for
 * them when absent, so it is theirs and private as if they had made it).
 */
function privateDirOf(prefix: string, what: string, uid: number | undefined, gid: number | undefined, create = true): string | undefined {
  const dir = join(tmpdir(), `${prefix}-${uid ?? 'user'}`);
  if (create) {
    try {
      fs.mkdirSync(dir, { mode: 0o700 });
      if (uid !== undefined && uid !== process.getuid?.()) fs.lchownSync(dir, uid, gid!);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError(e, `cannot create ${what} directory`, dir);
    }
  }
  const st = fs.lstatSync(dir, { throwIfNoEntry: false });
  if (!st) return undefined;
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o077) !== 0) {
    throw new TargetError(`cannot use ${what} directory ${dir}: not a private directory of ${uid === process.getuid?.() ? 'this user' : `user ${uid}`}`, { path: dir });
  }
  return dir;
}

interface LockBody {
  pid: number;
  host: string;
  /** Process start time (Linux, clock ticks since boot) to tell a reused pid from the holder. */
  start?: string;
  command: string;
  target: string;
  token: string;
  /** The tree (formatted digest) a checkout holding this lock reads from the store. */
  root?: string;
}

function processStart(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Fields after the command name (which may hold spaces and parentheses): field 22 is starttime.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** True unless the holder is provably gone. A lock from another host is assumed alive. */
function holderAlive(b: LockBody): boolean {
  if (b.host !== hostname()) return true;
  try {
    process.kill(b.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  if (b.start !== undefined) {
    const now = processStart(b.pid);
    if (now !== undefined && now !== b.start) return false;
  }
  return true;
}

/**
 * The lock at `path`, or undefined when absent or not a lock. Opened with O_NOFOLLOW: a symbolic
 * link there is never read; in the store's `locks/` (`store`, its root) it is a StoreDamagedError
 * naming it; elsewhere (the private folder) it reads as no lock: a stale one, whose link alone
 * breakStale removes.
 */
function readBody(path: string, store?: string): LockBody | undefined {
  let text: string;
  try {
    text = (store !== undefined ? readStoreEntry(store, path, 'a lock file') : readFileNoFollow(path)).toString('utf8');
  } catch (e) {
    if (e instanceof StoreDamagedError) throw e;
    return undefined;
  }
  try {
    const b = JSON.parse(text) as LockBody;
    return typeof b.pid === 'number' && typeof b.token === 'string' && (b.root === undefined || typeof b.root === 'string') ? b : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Takes the lock at `lockPath`. `store` (its root) when the lock is in the store's `locks/`: a link
 * planted at the lock's name is then a StoreDamagedError (link() never writes through it, and the
 * lock read to see whether it is held refuses it).
 */
function lockTarget(realTarget: string, lockPath: string, command: string, root?: string, store?: string): TargetGuard {
  const body: LockBody = { pid: process.pid, host: hostname(), start: processStart(process.pid), command, target: realTarget, token: randomBytes(12).toString('hex'), root };
  // The lock appears whole or not at all: written to a private name, then linked (fails if taken).
  const tmp = `${lockPath}.${body.token}.tmp`;
  try {
    fs.writeFileSync(tmp, JSON.stringify(body), { flag: 'wx', mode: 0o644 });
  } catch (e) {
    throw fsError(e, 'cannot create lock', tmp);
  }
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        fs.linkSync(tmp, lockPath);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError(e, 'cannot create lock', lockPath);
      }
      const held = readBody(lockPath, store);
      if (held && holderAlive(held)) {
        throw new TargetBusyError(`${realTarget} is in use by another treecast ${held.command} (pid ${held.pid}); it was left unchanged`, {
          path: realTarget,
          hint: `wait for process ${held.pid} to finish, then run the same command again`,
        });
      }
      if (attempt >= 3) throw new TargetBusyError(`cannot take the lock on ${realTarget} (${lockPath} keeps changing)`, { path: realTarget });
      breakStale(lockPath, held);
    }
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  let released = false;
  return {
    realTarget,
    release() {
      if (released) return;
      released = true;
      // Remove only our own lock (a stale-lock breaker may, in a rare race, have replaced it).
      if (readBody(lockPath)?.token === body.token) fs.rmSync(lockPath, { force: true });
    },
  };
}

/**
 * Removes a lock whose holder is gone. It is first renamed aside, so when another process took
 * over the stale lock in between, the lock moved aside is that process's live one and is put back.
 */
function breakStale(lockPath: string, stale: LockBody | undefined): void {
  const aside = `${lockPath}.${randomBytes(6).toString('hex')}.stale`;
  try {
    fs.renameSync(lockPath, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw fsError(e, 'cannot remove stale lock', lockPath);
  }
  const moved = readBody(aside);
  if (moved && moved.token !== stale?.token && holderAlive(moved)) {
    try {
      fs.linkSync(aside, lockPath);
    } catch {
      /* a third process holds it now: it wins */
    }
  }
  fs.rmSync(aside, { force: true });
}
