/** Option parsing shared by the command files: --store, --json, numbers, signals. */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { FileSystemError, InvalidTreeError, fsError } from '../errors.js';
import { type Digest, formatDigest } from '../core/digest.js';
import { LocalStore, defaultStorePath } from '../store/local.js';

export function addStoreOption(cmd: Command): Command {
  return cmd.option('--store <path>', 'store location (default: $TREECAST_STORE, else $XDG_CACHE_HOME/treecast or ~/.cache/treecast); made only in a new or empty folder');
}

/** `--json`; `what` says what it prints where that is not one object (the listings print an array). */
export function addJsonOption(cmd: Command, what = 'one JSON object'): Command {
  return cmd.option('--json', `print ${what} on stdout instead of human-readable lines`);
}

export function openStore(opts: { store?: string }): LocalStore {
  return LocalStore.open(defaultStorePath(opts.store));
}

/**
 * The store of a command that only reads, checks or prunes one (status, ls, diff, refs, blob get,
 * verify, gc): it must already be a store.
 * A mistyped --store fails naming the path and creates nothing, where openStore would make an
 * empty store there and report it clean.
 */
export function openExistingStore(opts: { store?: string }): LocalStore {
  const root = defaultStorePath(opts.store);
  const hint = 'check --store and TREECAST_STORE';
  let st: fs.Stats;
  try {
    st = fs.statSync(root);
  } catch (e) {
    throw fsError(e, 'no store at', root);
  }
  if (!st.isDirectory()) throw new FileSystemError(`no store at ${root}: not a directory`, { path: root, syscallCode: 'ENOTDIR', hint });
  if (!fs.existsSync(join(root, 'cas'))) throw new FileSystemError(`no store at ${root}: the directory holds no cas folder`, { path: root, syscallCode: 'ENOENT', hint });
  return LocalStore.open(root);
}

/** A commander parser for whole numbers in [min, max]; a bad value is a usage error (exit 2). */
export function intInRange(name: string, min: number, max: number): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be a whole number from ${min} to ${max}`);
    }
    return n;
  };
}

/** The most worker threads any command takes. */
export const MAX_JOBS = 256;

/**
 * `--jobs N`, the same for every command that takes it: a whole number of worker threads from 1 to
 * 256 (default: one per core). Validated here, at the edge, so no command can accept what another
 * refuses.
 */
export function addJobsOption(cmd: Command, what: string): Command {
  return cmd.option('--jobs <n>', `${what} (1-${MAX_JOBS}, default: one per core)`, intInRange('--jobs', 1, MAX_JOBS));
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** The second signal of the stop each withSignals signal belongs to, and how many cut on it. */
const secondSignals = new WeakMap<AbortSignal, { ac: AbortController; cuts: number }>();

/**
 * Runs `fn` with an AbortSignal that SIGINT/SIGTERM abort, so long work stops between batches and
 * leaves a state the same command can finish (exit 130).
 *
 * The first signal starts an orderly stop: nothing new starts, requests to a remote already in
 * flight complete (their bytes are kept: a pull stores them, a checkout writes them), retries and
 * their backoff end at once, worker threads finish their batch. It does not cut a request that
 * seems stalled: telling a stall from a slow link needs a threshold that would also throw away a
 * good transfer the user meant to keep, and undici's own timeouts still end a stalled one (60 s
 * to the headers, 30 s with no byte of a body).
 *
 * A second signal (Ctrl-C pressed again) while that stop runs cuts what still waits on the
 * network, and only that: whoever registered with `onSecondSignal` (the remote client) aborts its
 * requests in flight at once, their bytes dropped (a blob is stored, a file written, only from
 * bytes received whole and verified, so none is half done); the next run fetches them again. It
 * does not exit at once: that would kill the worker threads in the middle of a file, leaving it
 * half written, and skip the command's own clean-up (temporary files, an unpack's staging folder,
 * a checkout's record). The command then ends as after one signal (exit 130), as soon as the
 * batches its threads hold are done: a command with no requests to cut (snapshot, a local
 * checkout, unpack) waits for those batches as before. SIGKILL still ends it at once, and the
 * same command then finishes what it left (README, checkout).
 */
export async function withSignals<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const second = { ac: new AbortController(), cuts: 0 };
  secondSignals.set(ac.signal, second);
  const onSignal = (sig: NodeJS.Signals) => {
    if (ac.signal.aborted) {
      const what = second.cuts > 0 ? 'requests still in flight are cut now, writes in progress finish' : 'after the work in progress';
      process.stderr.write(`treecast: ${sig} received again; already stopping, ${what}\n`);
      second.ac.abort();
      return;
    }
    process.stderr.write(`\ntreecast: ${sig} received, stopping after the work in progress...\n`);
    ac.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await fn(ac.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/**
 * Calls `cut` on the second signal of the stop `signal` (from withSignals) belongs to: requests
 * that must not hold the stop once the user asked twice. Nothing for a signal of another origin.
 */
export function onSecondSignal(signal: AbortSignal, cut: () => void): void {
  const second = secondSignals.get(signal);
  if (!second) return;
  second.cuts++;
  if (second.ac.signal.aborted) cut();
  else second.ac.signal.addEventListener('abort', cut, { once: true });
}

/**
 * For an error met reading the tree a command was given: when it is the root itself that does not
 * decode as a Directory message, the digest (or ref) names a blob that is not a tree, most often a
 * file's contents, and the decoder's own words (an unsupported field tag) told the user nothing of
 * that. Any other error is returned as it was.
 */
export function explainNotATree(e: unknown, roots: readonly (Digest | undefined)[], command: string): unknown {
  if (!(e instanceof InvalidTreeError) || e.digest === undefined) return e;
  const root = roots.find((d) => d !== undefined && formatDigest(d) === e.digest);
  if (root === undefined) return e;
  const d = formatDigest(root);
  const why = e.message.replace(/^invalid Directory message in \S+: /, '');
  return new InvalidTreeError(`${d} names a blob that is not a Directory (a tree): its bytes do not decode as one (${why})`, {
    digest: d,
    cause: e,
    hint: `${command} takes the digest of a tree, as \`treecast snapshot\` prints it or a ref names it; a file's blob is read with \`treecast blob get ${d}\``,
  });
}
