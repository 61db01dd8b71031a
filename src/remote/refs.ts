/**
 * Named trees on a remote cache, carried by the Bazel HTTP cache's action cache so they travel
 * through any server that speaks it (nginx WebDAV, bazel-remote, treecast serve).
 *
 * A ref NAME lives at `/ac/<key>`, key = SHA-256 of `REF_NAMESPACE + NAME` (UTF-8), so
 *   printf 'treecast-ref/v1:%s' NAME | sha256sum
 * computes it. The entry is a REAPI ActionResult with one OutputDirectory (path `tree`):
 * `tree_digest` names a REAPI Tree message of the whole tree in the CAS, `root_directory_digest`
 * its root Directory. A client without treecast's batch endpoints gets every Directory of the tree
 * with one GET of that Tree message. The layout is documented in docs/remote-protocol.md.
 */
import { encodeActionResult, decodeActionResult, encodeTree, MAX_ACTION_RESULT_BYTES } from '../core/action-result.js';
import { type Digest, digestOf, formatDigest, sha256Hex } from '../core/digest.js';
import { BlobNotFoundError, InvalidActionResultError, type RemoteRefMiss, remoteRefMissError } from '../errors.js';
import { checkRefName, type LocalStore } from '../store/local.js';
import { TreeReader } from '../store/tree-reader.js';
import type { RemoteClient } from './client.js';
import type { RemoteFetcher } from './fetch.js';

/** Prefix of every ref key's hashed text; a new layout would take a new version here. */
export const REF_NAMESPACE = 'treecast-ref/v1:';
/** The path of the one OutputDirectory in a ref entry. */
export const REF_OUTPUT_PATH = 'tree';

/** The action cache key of ref `name` (64 hex). */
export function refKey(name: string): string {
  checkRefName(name);
  return sha256Hex(Buffer.from(REF_NAMESPACE + name, 'utf8'));
}

/** The ActionResult bytes naming a tree: one OutputDirectory with its Tree message and root. */
export function refEntry(root: Digest, tree: Digest): Buffer {
  return encodeActionResult({
    outputFiles: [],
    outputDirectories: [{ path: REF_OUTPUT_PATH, treeDigest: tree, rootDirectoryDigest: root, topologicallySorted: true }],
    exitCode: 0,
  });
}

/**
 * The REAPI Tree message of the tree under `root` in the local store: the root, then every other
 * directory once, breadth first (parents before children, as `is_topologically_sorted` promises).
 */
export function treeMessage(store: LocalStore, root: Digest): Buffer {
  const reader = new TreeReader(store);
  reader.usePack(root);
  const order: Digest[] = [root];
  const seen = new Set<string>([root.hash]);
  for (let i = 0; i < order.length; i++) {
    for (const sub of reader.getSync(order[i]!).directories) {
      if (seen.has(sub.digest.hash)) continue;
      seen.add(sub.digest.hash);
      order.push(sub.digest);
    }
  }
  const bytes = order.map((d) => reader.raw.get(d.hash)!);
  return encodeTree(bytes[0]!, bytes.slice(1));
}

export interface PushedRef {
  name: string;
  key: string;
  tree: string;
}

/**
 * Names `root` (already on the server) as `name`: uploads its Tree message when the server lacks
 * it, then writes the action cache entry last, so a server holding the entry holds the tree.
 */
export async function pushRef(store: LocalStore, client: RemoteClient, root: Digest, name: string): Promise<PushedRef> {
  const key = refKey(name);
  const tree = treeMessage(store, root);
  const treeDigest = digestOf(tree);
  if (!(await client.has(treeDigest))) await client.putBytes(tree, treeDigest);
  await client.putActionResult(key, refEntry(root, treeDigest));
  return { name, key, tree: formatDigest(treeDigest) };
}

export interface RemoteRef {
  name: string;
  key: string;
  /** The root Directory, when the entry names it (treecast's entries always do). */
  root?: Digest;
  /** The Tree message. */
  tree: Digest;
  /**
   * The server holds the entry but not every blob it reaches: the one it named ('' when it named
   * none it could). A treecast server validating its action cache says so (client.getRefEntry).
   */
  missing?: string;
}

/**
 * Looks ref `name` up on the server: undefined when there is no entry; an entry that is not a
 * well-formed ActionResult with exactly one OutputDirectory is refused (InvalidActionResultError).
 */
export async function lookupRef(client: RemoteClient, name: string): Promise<RemoteRef | undefined> {
  const key = refKey(name);
  // The entry even when a treecast server's check finds a blob it reaches missing (such an entry
  // is a 404 for Bazel clients), with that blob named: a 404 would read as a name that does not exist.
  const got = await client.getRefEntry(key, MAX_ACTION_RESULT_BYTES);
  if (got === undefined) return undefined;
  const bytes = got.bytes;
  const where = `the action cache entry of ref '${name}' (ac/${key}) on ${client.server}`;
  const ar = decodeActionResult(bytes, where);
  if (ar.outputDirectories.length !== 1) {
    throw new InvalidActionResultError(`${where} is not a treecast ref: it has ${ar.outputDirectories.length} output directories, not 1`, { digest: key });
  }
  const out = ar.outputDirectories[0]!;
  return { name, key, tree: out.treeDigest, ...(out.rootDirectoryDigest ? { root: out.rootDirectoryDigest } : {}), ...(got.missing !== undefined ? { missing: got.missing } : {}) };
}

export interface RefHit {
  name: string;
  key: string;
  digest: string;
  tree: string;
  /** True when a --fallback name hit, not the first. */
  fallback: boolean;
  /** The names tried before this one, and why each missed. */
  missed: RemoteRefMiss[];
}

/**
 * Tries `names` in order (the first, then each fallback) and returns the first whose entry exists
 * and whose every blob the server holds, with the fetcher that checked it, for the command to go
 * on with (it fetches the Directory messages, unless `fetcher.secure` already did). A name whose entry names blobs the server lacks is a miss, never a
 * partial result: `fetcher.secure` finds that out before anything is written. A fetcher that saw a
 * miss is closed and a new one made for the next name. All missing: RemoteRefNotFoundError (exit 3),
 * or, when an entry was there but its tree reaches a blob the server lacks, RemoteRefIncompleteError
 * naming that blob (ERR_TREECAST_BLOB_NOT_FOUND, exit 3).
 * With `defer`, a plain cache's blobs are left unchecked (`fetcher.unsecured`): the checkout
 * fetches them as it writes and undoes its writes on a miss, then asks again for the names after
 * this one, passing the misses so far as `missed`.
 */
export async function resolveRemoteRef(
  names: readonly string[],
  newFetcher: () => RemoteFetcher,
  o: { defer?: boolean; missed?: readonly RemoteRefMiss[] } = {},
): Promise<{ hit: RefHit; fetcher: RemoteFetcher }> {
  for (const n of names) checkRefName(n); // every name checked before any request
  const missed: RemoteRefMiss[] = [...(o.missed ?? [])];
  let server = '';
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    const fetcher = newFetcher();
    server = fetcher.client.server;
    let keep = false;
    try {
      const ref = await lookupRef(fetcher.client, name);
      if (!ref) {
        missed.push({ name, key: refKey(name), reason: 'absent' });
        continue;
      }
      if (ref.missing !== undefined) {
        const digest = ref.missing === '' ? undefined : ref.missing;
        const detail = `${digest === undefined ? 'a blob it reaches' : `blob ${digest}`} is not on the server ${fetcher.client.server}`;
        missed.push({ name, key: ref.key, reason: 'incomplete', detail, ...(digest !== undefined ? { digest } : {}) });
        continue;
      }
      try {
        const root = await fetcher.secure(ref.root, ref.tree, o.defer === true);
        keep = true;
        return { hit: { name, key: ref.key, digest: formatDigest(root), tree: formatDigest(ref.tree), fallback: missed.length > 0, missed }, fetcher };
      } catch (e) {
        if (!(e instanceof BlobNotFoundError)) throw e;
        missed.push({ name, key: ref.key, reason: 'incomplete', detail: e.message, ...(e.digest !== undefined ? { digest: e.digest } : {}) });
      }
    } finally {
      if (!keep) await fetcher.close();
    }
  }
  throw remoteRefMissError(missed, server);
}
