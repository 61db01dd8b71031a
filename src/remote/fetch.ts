/**
 * Fetching trees from a remote cache into the local store: `pull`, and the two hooks a remote
 * checkout uses (prepareTree, ensureBlobs) so it writes files while their blobs arrive.
 *
 * Directory messages come first, breadth first: from a treecast server in one /tree response,
 * otherwise one level at a time through the window. Then file blobs flow through the same window,
 * in tree order, with blobs the checkout is waiting for moved to the front; a pull queues each
 * directory's file blobs as soon as its walk has read the directory.
 *
 * Resumable by construction: a blob reaches the store only whole and verified, and what is already
 * in the store is never requested, so running the same command again after a cut fetches only the
 * rest. On stop() (SIGINT/SIGTERM) no new request starts and those in flight are finished, so no
 * byte the server sent is thrown away; on cut() (a second signal) those in flight are aborted too,
 * so a stalled server cannot hold the stop.
 */
import * as fs from 'node:fs';
import { MAX_TREE_BYTES, decodeTree, treeDirectories } from '../core/action-result.js';
import { type Digest, formatDigest, sameDigest } from '../core/digest.js';
import { MAX_DEPTH } from '../core/names.js';
import { PackedDigests } from '../core/packed-digests.js';
import { BlobNotFoundError, InterruptedError, InvalidTreeError } from '../errors.js';
import type { LocalStore } from '../store/local.js';
import { TreeReader } from '../store/tree-reader.js';
import { writeTreePack } from '../store/tree-pack.js';
import { markComplete, settledStateHolding } from '../store/completeness.js';
import { pulledAlready } from './pulled.js';
import { type ClientOptions, RemoteClient } from './client.js';
import { StoreWriter } from './store-writer.js';
import { FetchScheduler, runWindow } from './window.js';
import { holdYoungGeneration } from './young-generation.js';

/** Batch limits: small enough that N requests are in flight on a typical tree, large enough that a
 * request carries real work. Blobs above `SINGLE_ABOVE` stream alone through GET /cas. */
export const BATCH_BLOBS = 64;
export const BATCH_BYTES = 1 << 20;
export const SINGLE_ABOVE = 1 << 20;
/**
 * A `--direct` checkout's batch reads (fetchBytes): larger, since its bytes land in a slab the
 * checkout already holds and no store writer waits on them; a batch of the checkout (at most 256
 * files and about 4 MiB, materialize/execute.ts) is then mostly one request. Perf: the Linux tree's
 * `--direct` went from 1,645 requests to 522; client CPU (user + sys) 5.19-5.56 s (median 5.34)
 * against 5.54-6.15 s (median 5.81) with 64 blobs / 1 MiB, server CPU 2.17-2.91 s against
 * 2.28-2.73 s, 3 interleaved runs at load 8-10. A plain checkout's too, copy or link
 * (cli/commands/remote.ts).
 */
export const DIRECT_BATCH_BLOBS = 256;
export const DIRECT_BATCH_BYTES = 4 << 20;
/** Trees with fewer files look each blob up in the store rather than list the store. */
const LISTING_MIN_FILES = 4096;
/** A pull's walk gives the event loop a turn this often (ms), once it has queued blobs. */
const WALK_YIELD_MS = 4;
/** Digests per `/missing` question. */
export const MISSING_CHUNK = 10_000;

export interface FetchSummary {
  root: string;
  directories: number;
  files: number;
  /** Blobs (files and directories) received and stored. */
  fetched: number;
  fetchedBytes: number;
  /** Blobs already in the local store, not requested. */
  skipped: number;
  retried: number;
  requests: number;
  /** Most requests this client had in flight at once. */
  maxInFlight: number;
  batch: boolean;
}

export interface FetcherOptions {
  /**
   * From a plain cache (no batch endpoints), stop V8's young generation from growing for the rest
   * of the process (young-generation.ts): the CLI's choice, as it is process-wide.
   */
  holdYoungGeneration?: boolean;
}

export class RemoteFetcher {
  readonly client: RemoteClient;
  private scheduler: FetchScheduler | undefined;
  private batch = false;
  private ready: Promise<void> | undefined;
  /** Set once `batch` holds the server's answer. */
  private batchKnown = false;
  /** Read while preparing a tree; replaced by an empty one after (see prepareTree). */
  private reader: TreeReader;
  /** Hashes and writes batch-read blobs off the main thread. */
  private readonly writer: StoreWriter;
  private stopReason: unknown;
  private skipped = 0;
  /** Blobs known to be in the local store during this run: no second stat (see receiver.ts). */
  private readonly known = new PackedDigests();
  private directories = 0;
  /** Distinct non-empty file blobs of the prepared tree, in tree order (held for the whole run, packed). */
  private files = new PackedDigests();
  /** Distinct Directory messages of the prepared tree. */
  private dirDigests: Digest[] = [];
  private root: Digest | undefined;
  /** Set by `secure` or `claimAbsent`: the file blobs the store lacks, so `prefetch` need not look again. */
  private absentFiles: PackedDigests | undefined;
  /** A pull's walk: file blobs found and not yet handed to queueWalked. */
  private walked: Digest[] = [];
  /** A pull's walk: blobs found absent, short of a whole batch, not yet queued. */
  private walkAbsent: Digest[] = [];
  /** A pull's walk: the store's listing once the tree is large enough to take one (null: stat each). */
  private walkListing: Set<string> | null | undefined;
  /** By index into absentFiles: 1 once claimAbsent answered true for it. */
  private claimed: Uint8Array | undefined;
  private prefetched = false;
  /** True after `secure(..., defer)` on a plain cache: the server was not yet shown to hold every blob. */
  unsecured = false;
  /** Requests of a direct checkout (fetchBytes) in flight: now, and the most at once. */
  private directInFlight = 0;
  private directMaxInFlight = 0;
  private readonly directQueue: (() => void)[] = [];
  /** The most fetchBytes and fetchStream requests waiting for a slot at once (see held()). */
  private directMaxWaiting = 0;
  /** Blobs this run will fetch (for progress). */
  planned = 0;
  plannedBytes = 0;

  constructor(
    readonly store: LocalStore,
    client: RemoteClient | ClientOptions,
    private readonly options: FetcherOptions = {},
  ) {
    this.client = client instanceof RemoteClient ? client : new RemoteClient(client);
    this.reader = new TreeReader(store);
    this.writer = new StoreWriter(store.root);
  }

  /** Whether the server turned out to be a plain cache (no batch endpoints); false until it is asked. */
  get plainCache(): boolean {
    return this.batchKnown && !this.batch;
  }

  /** Stops starting requests; what is in flight finishes. Pending work fails with InterruptedError. */
  stop(reason: unknown = new InterruptedError('interrupted; run the same command again to resume')): void {
    if (this.stopReason !== undefined) return;
    this.stopReason = reason;
    this.client.stop();
    this.scheduler?.stop(reason);
  }

  /**
   * stop(), and the requests still in flight are cut at once (client.ts cut: the second
   * SIGINT/SIGTERM). What they had not received whole is dropped and fetched by the next run;
   * the store writer still finishes what it was handed, so close() ends promptly and cleanly.
   */
  cut(): void {
    this.stop();
    this.client.cut();
  }

  async close(): Promise<void> {
    await this.scheduler?.idle();
    await this.writer.close();
    await this.client.close();
  }

  private init(): Promise<void> {
    this.ready ??= (async () => {
      this.batch = await this.client.batchAvailable();
      this.batchKnown = true;
      if (!this.batch && this.options.holdYoungGeneration) holdYoungGeneration();
      const store = this.store;
      this.scheduler = new FetchScheduler({
        concurrency: this.client.concurrency,
        maxBatchBlobs: this.batch ? BATCH_BLOBS : 1,
        maxBatchBytes: BATCH_BYTES,
        singleAbove: this.batch ? SINGLE_ABOVE : 0,
        fetchBatch: (ds) => (!this.batch || (ds.length === 1 && ds[0]!.size > SINGLE_ABOVE) ? this.client.fetchOne(ds[0]!, store) : this.client.fetchBatch(ds, store, this.writer)),
        isLocal: (d) => this.known.has(d) || store.hasSync(d),
      });
      if (this.stopReason !== undefined) this.scheduler.stop(this.stopReason);
    })();
    return this.ready;
  }

  /**
   * Leaves every Directory message of the tree in the local store, verified and decodable, and
   * remembers the tree's file blobs. (CheckoutOptions.prepareTree.) With `queueFiles` (a pull),
   * each directory's file blobs the store lacks are queued for fetching as the walk finds them
   * (queueWalked), so blob batches travel while deeper levels are fetched and while the walk
   * decodes what /tree sent, and prefetch() has nothing left to do.
   * Perf: the synthetic 1,000 x 20 tree at --latency 50 --concurrency 16 (server's own request
   * log, 3 pulls each, load average 12-13): the first blob batch reached the server 0.92-1.40 s
   * after the pull's first request, against 1.38-1.75 s when every blob waited for the whole walk,
   * the tree pack and the store lookups; the number of requests is the same (315, at 1 and at 16).
   * The Linux tree at the same settings, 4 interleaved pairs at load average 6-7: 9.86-14.46 s
   * (median 12.45) against 10.91-15.22 s (median 13.01), faster in each pair by 0.44-1.05 s.
   */
  async prepareTree(root: Digest, queueFiles = false): Promise<void> {
    if (this.root && sameDigest(this.root, root)) return; // prepared already (by secure)
    const store = this.store;
    const viaTree = new Set<string>();
    // Perf: the walk below decodes the messages /tree just stored from these bytes instead of
    // reading each back (open, read and SHA-256 again): 0.08-0.12 s of main-thread CPU on the
    // Linux tree's 5,092 messages at --latency 50 --concurrency 16 (two profiles), none after. At most MAX_TREE_BYTES
    // are kept (the size of a Tree message, held whole anyway): a server sending messages the tree
    // does not reach cannot make the client hold more.
    const received = new Map<string, Buffer>();
    let receivedBytes = 0;
    const onStored = (d: Digest, bytes: Buffer | undefined) => {
      viaTree.add(d.hash);
      if (bytes && receivedBytes + bytes.length <= MAX_TREE_BYTES) {
        received.set(d.hash, bytes);
        receivedBytes += bytes.length;
      }
      this.planned++;
    };
    // Perf: the /tree request goes out beside the /status question instead of after it, one round
    // trip less before the first blob is asked for (50 ms of a 1.8 s pull at --latency 50; the
    // synthetic 1,000 x 20 pull at --concurrency 16 measured 5.80-7.14 s (median 6.27) before and
    // 5.07-7.42 s (median 5.49) after, 5 interleaved pairs at load average 15). Its answer is used
    // only from a server that offers batches; anything else falls back below.
    const early = this.ready === undefined && !store.hasSync(root) ? this.client.fetchTreeEarly(root, store, onStored) : undefined;
    await this.init();
    if (early) await early;
    this.root = root;
    // A tree pack (store/tree-pack.ts) left by an earlier pull, snapshot or checkout of this tree
    // serves the messages in one read; each is still decoded and validated below.
    const packed = this.reader.usePack(root);
    if (this.batch && !store.hasSync(root)) {
      // One response with every directory; any it lacks are fetched level by level below.
      await this.client.fetchTree(root, store, onStored);
    }
    this.reader.useVerified(received);
    const seenDirs = new Set<string>([root.hash]);
    const dirDigests: Digest[] = [root];
    this.files = new PackedDigests(4096);
    if (queueFiles) this.prefetched = true;
    let yielded = -Infinity;
    let level: Digest[] = [root];
    for (let depth = 0; level.length > 0; depth++) {
      if (depth > MAX_DEPTH) throw new InvalidTreeError(`tree ${formatDigest(root)} nests deeper than ${MAX_DEPTH} levels`, { digest: formatDigest(root) });
      const absent = level.filter((d) => !store.hasSync(d));
      const absentSet = new Set(absent);
      for (const d of level) if (!viaTree.has(d.hash) && !absentSet.has(d)) this.skipped++;
      this.planned += absent.length;
      if (queueFiles) this.queueWalked(false); // files found so far travel while this level is fetched
      if (absent.length > 0) await this.scheduler!.want(absent, true);
      const next: Digest[] = [];
      for (const d of level) {
        const dir = this.reader.getSync(d);
        for (const f of dir.files) {
          if (f.digest.size > 0 && this.files.add(f.digest) && queueFiles) this.walked.push(f.digest);
        }
        for (const sub of dir.directories) {
          if (seenDirs.has(sub.digest.hash)) continue;
          seenDirs.add(sub.digest.hash);
          dirDigests.push(sub.digest);
          next.push(sub.digest);
        }
        if (queueFiles && this.walked.length >= BATCH_BLOBS) {
          this.queueWalked(false);
          // The requests just dispatched go out, and answers that came in are taken, only once the
          // walk gives the event loop a turn: first when the window is full (its requests leave
          // together), then every WALK_YIELD_MS while it stays full.
          if (this.scheduler!.inFlight >= this.client.concurrency && performance.now() - yielded >= WALK_YIELD_MS) {
            await new Promise((r) => setImmediate(r));
            yielded = performance.now();
          }
        }
      }
      level = next;
    }
    if (queueFiles) {
      this.queueWalked(true);
      this.walkListing = undefined;
    }
    this.directories = seenDirs.size;
    this.dirDigests = dirDigests;
    // Every message is now local and validated: pack them so the next load of this tree (the
    // checkout that usually follows, a pull again) is one read instead of one per directory.
    if (!packed) writeTreePack(store, root, this.reader.raw);
    // Only `files` is needed from here on; the checkout reads the tree with its own reader.
    // Perf: the decoded Linux tree held ~25 MB of heap for the whole of `checkout --remote`.
    this.reader = new TreeReader(store);
  }

  /**
   * Starts fetching every file blob of the prepared tree that the store lacks, in tree order.
   * Perf: a pull of the Linux tree at --latency 50 --concurrency 16 keeps all 16 requests in flight
   * from its first blob request to its last but ~0.1 s (1,539 requests: /status, /tree, 1,460
   * batch reads, 77 single GETs); before the first come 0.7-1.1 s of /status + /tree and 0.4-0.7 s
   * of walking the tree (3 traced runs). It is CPU-bound on 2 cores (cpu profile: main thread 5.5 s busy of 12, store
   * writer 6.2 s, plus the server). A pull queues its blobs during the walk instead
   * (prepareTree's queueFiles); this is for the other callers (finish, secureBlobs).
   */
  prefetch(): void {
    if (this.prefetched) return;
    this.prefetched = true;
    const absent = [...(this.absentFiles ?? this.findAbsentFiles())];
    for (const d of absent) this.plannedBytes += d.size;
    this.planned += absent.length;
    // Failures reach the caller through ensureBlobs or finish(); no state is kept per queued blob.
    this.scheduler!.queue(absent);
  }

  /**
   * A pull's walk: the file blobs it found since the last call that the store lacks go to the
   * scheduler now, in tree order, instead of after the whole walk. Each is looked up once, as
   * findAbsentFiles would: one access() each until the tree passes the size where listing the
   * store is cheaper (listingIsCheaper), then in one listing of the store taken at that point.
   * Whole batches only, until `last`: a short one would cost a request more than the walk's end.
   */
  private queueWalked(last: boolean): void {
    const found = this.walked;
    this.walked = [];
    if (this.walkListing === undefined && this.files.length >= LISTING_MIN_FILES) this.walkListing = this.listStoreIfCheaper() ?? null;
    const listed = this.walkListing ?? undefined;
    const absent = this.walkAbsent;
    for (const d of found) if (!this.alreadyStored(d, listed)) absent.push(d);
    const n = last ? absent.length : absent.length - (absent.length % BATCH_BLOBS);
    if (n === 0) return;
    const ready = n === absent.length ? absent : absent.slice(0, n);
    this.walkAbsent = n === absent.length ? [] : absent.slice(n);
    for (const d of ready) this.plannedBytes += d.size;
    this.planned += ready.length;
    this.scheduler!.queue(ready);
  }

  /**
   * True the first time it is asked about a blob of the prepared tree that the store lacked (one
   * look at the store for the whole tree): what a plain checkout's copy fetches into memory, to
   * write into the store and the target (CheckoutOptions.fetchFor); the rest, and a blob asked
   * about again, it copies from the store (execute.ts waits for the batch that fetched it).
   */
  claimAbsent(d: Digest): boolean {
    if (this.prefetched) return false; // into the store already (secure() on a plain cache)
    this.absentFiles ??= this.findAbsentFiles();
    this.claimed ??= new Uint8Array(this.absentFiles.length);
    const i = this.absentFiles.indexOf(d);
    if (i < 0 || this.claimed[i] === 1) return false;
    this.claimed[i] = 1;
    return true;
  }

  /** The prepared tree's file blobs the store lacks; counts the others as skipped. */
  private findAbsentFiles(): PackedDigests {
    const absent = new PackedDigests();
    const listed = this.listStoreIfCheaper();
    for (const d of this.files) if (!this.alreadyStored(d, listed)) absent.add(d);
    return absent;
  }

  /**
   * Whether the store holds file blob `d` (looked up in `listed`, a listing of the store, when one
   * was taken); one it holds is counted as skipped and remembered as known.
   */
  private alreadyStored(d: Digest, listed: Set<string> | undefined): boolean {
    if (!(listed ? listed.has(d.hash) : this.store.hasSync(d))) return false;
    this.skipped++;
    this.known.add(d);
    return true;
  }

  /**
   * For a tree named on the remote (remote/refs.ts): makes sure the server holds every blob before
   * anything is written, so a name whose entry outlived some of its blobs is a miss, never a
   * partial checkout. A treecast server that validates its action cache said so in /status and
   * answered the entry only whole: its tree is left to the command's prepareTree (or pull). From
   * any other server the Directory messages are left in the local store here, and one that does
   * not validate is asked `/missing` (one request per 10,000 blobs); a plain Bazel cache can only be asked one
   * HEAD per blob, so the blobs are fetched instead and a checkout then writes from the store.
   * With `defer`, a plain cache's blobs are not fetched here: `unsecured` turns true and the caller
   * either calls `secureBlobs()` before writing or undoes what it wrote on a BlobNotFoundError.
   * Perf: `checkout NAME --remote` of the Linux tree from nginx, 3 interleaved pairs at load 7.8-9:
   * 12.8-21.4 s (median 14.8) written as blobs arrive, 16.4-38.6 s (median 17.1) fetched whole
   * into the store first (rsync -a: median 7.4 s; 2.00x against 2.31x). Peak RSS went from
   * 226-235 MB to 288-314 MB: that of `checkout DIGEST --remote`, which this path now is.
   * Without batch endpoints the Directory messages come from the ref's Tree message, one GET.
   * Throws BlobNotFoundError when the server lacks anything. Returns the root digest.
   */
  async secure(root: Digest | undefined, tree: Digest, defer = false): Promise<Digest> {
    await this.init();
    try {
      if (root === undefined || (!this.batch && !this.store.hasSync(root))) root = await this.loadTreeMessage(tree, root);
      // A treecast server validating its action cache answered the entry only while it held
      // every blob the entry names (the Directory messages too): asking /missing again would check
      // the same thing twice, and the command's own prepareTree fetches the tree, as it does for a
      // tree named by digest. Perf: on the Linux tree (78k blobs) that second check was 8 requests
      // and ~0.4 s before the first write of `checkout NAME --remote` (profiled; the server stats
      // each blob again).
      // Perf: prepared here, the tree came before the checkout started, so its writer threads
      // booted after the tree instead of while it arrived (materialize/checkout.ts), and a pull
      // again by name read and walked the whole tree before pull() found it complete
      // (pulledAlready). That pull of the Linux tree, 5 interleaved pairs at load 10: CPU (user +
      // sys) 0.27-0.30 s against 0.99-1.03 s, peak RSS 104-105 MB against 152-162 MB, wall
      // median 0.74 s against 2.83 s. `checkout NAME --remote`'s CPU did not move beyond the
      // noise (client 7.65-8.07 s against 7.54-7.87 s, 5 pairs at load 9-11; wall was noise).
      if (this.batch && this.client.validatesEntries) return root;
      await this.prepareTree(root);
      if (!this.batch) {
        if (defer) {
          this.unsecured = true;
          return root;
        }
        await this.secureBlobs();
        return root;
      }
      const absent = [...(this.absentFiles = this.findAbsentFiles())];
      const chunks: Digest[][] = [];
      for (let i = 0; i < absent.length; i += MISSING_CHUNK) chunks.push(absent.slice(i, i + MISSING_CHUNK));
      let lacking: Digest | undefined;
      let count = 0;
      await runWindow(chunks, this.client.concurrency, async (chunk) => {
        const missing = await this.client.missing(chunk);
        count += missing.length;
        lacking ??= missing[0];
      }, () => this.stopReason !== undefined);
      if (this.stopReason !== undefined) throw this.stopReason;
      if (lacking) {
        throw new BlobNotFoundError(`${count} blob(s) of tree ${formatDigest(root)} are not on the server ${this.client.server}, e.g. ${formatDigest(lacking)}`, {
          digest: formatDigest(lacking),
        });
      }
      return root;
    } catch (e) {
      await this.drain(e);
      throw e;
    }
  }

  /** A plain cache's tree whose blobs `secure(..., defer)` did not fetch: all of them into the store now. */
  async secureBlobs(): Promise<void> {
    this.prefetch();
    await this.finish();
    this.unsecured = false;
  }

  /**
   * Fetches a REAPI Tree message (one GET) and stores every Directory in it, after all of them
   * were checked: each decodes strictly (safe names, canonical bytes), every directory reference
   * from the root resolves to one of them, and the root is `expectedRoot` when given. Nothing is
   * stored from a Tree that fails any check. Returns the root's digest.
   */
  private async loadTreeMessage(tree: Digest, expectedRoot: Digest | undefined): Promise<Digest> {
    const where = `Tree message ${formatDigest(tree)} from ${this.client.server}`;
    if (tree.size > MAX_TREE_BYTES) throw new InvalidTreeError(`${where} is larger than the ${MAX_TREE_BYTES} bytes accepted`, { digest: formatDigest(tree) });
    const decoded = decodeTree(await this.client.getBytes(tree), where);
    if (expectedRoot && !sameDigest(decoded.root.digest, expectedRoot)) {
      throw new InvalidTreeError(`${where} has root ${formatDigest(decoded.root.digest)}, not ${formatDigest(expectedRoot)} as the ref says`, {
        digest: formatDigest(tree),
      });
    }
    for (const d of treeDirectories(decoded, where).values()) this.store.putHashedSync(d.bytes, d.digest);
    return decoded.root.digest;
  }

  /**
   * The store's blob names, when listing the store costs less than one stat per file of the tree.
   * Perf: a pull again of the Linux tree would stat 78k blobs; listing the 256 shard folders and
   * building the set took 0.26 s in its profile (the stats it replaces were not timed apart). A
   * store much larger than the tree (a shared cache) is not listed: its size is estimated from one
   * shard.
   */
  private listStoreIfCheaper(): Set<string> | undefined {
    return this.listingIsCheaper() ? new Set(this.store.listHashes()) : undefined;
  }

  private listingIsCheaper(): boolean {
    if (this.files.length < LISTING_MIN_FILES) return false;
    let shard: string[];
    try {
      shard = fs.readdirSync(`${this.store.root}/cas/7f`);
    } catch {
      return false;
    }
    return shard.length * 256 <= 4 * this.files.length;
  }

  /** Leaves these blobs in the local store, verified, ahead of the queue. (CheckoutOptions.ensureBlobs.) */
  async ensureBlobs(digests: Digest[]): Promise<void> {
    await this.init();
    try {
      await this.scheduler!.want(digests, true);
    } catch (e) {
      await this.drain(e);
      throw e;
    }
  }

  /**
   * A direct checkout's batch: these blobs' bytes, back to back into `data`, fetched in
   * requests of at most BATCH_BLOBS / BATCH_BYTES running at once (the pool keeps `concurrency` of
   * them on the wire). Unverified: the checkout's workers hash each blob before writing it, and
   * nothing here touches the store. With `direct` (`--direct`), the larger DIRECT_BATCH_* reads.
   * (CheckoutOptions.fetchBytes.)
   */
  async fetchBytes(digests: Digest[], data: Uint8Array, direct = false): Promise<{ source: string }> {
    await this.init();
    if (this.stopReason !== undefined) throw this.stopReason;
    const [maxBlobs, maxBytes] = direct ? [DIRECT_BATCH_BLOBS, DIRECT_BATCH_BYTES] : [BATCH_BLOBS, BATCH_BYTES];
    const parts: { start: number; end: number; offset: number }[] = [];
    let start = 0;
    let end = 0;
    let bytes = 0;
    let offset = 0;
    const flush = () => {
      if (end > start) parts.push({ start, end, offset });
      offset += bytes;
      start = end;
      bytes = 0;
    };
    for (const d of digests) {
      if (end - start >= (this.batch ? maxBlobs : 1) || (bytes > 0 && bytes + d.size > maxBytes)) flush();
      end++;
      bytes += d.size;
    }
    flush();
    // Once one request of this call has started, the rest follow even after stop(): bytes that
    // arrived are written, not dropped to be fetched again on the next run.
    let committed = false;
    // At most `concurrency` runners per call take the parts in order, each waiting for a slot.
    // Perf: with one waiting request per part, a plain cache's one-blob parts made every batch
    // in flight (up to 6 of 256 files) queue a promise and closure per blob: 1,536 at once, long
    // enough to be promoted. The Linux tree from nginx promoted 76-79 MB over the run, 61-62 MB
    // with runners (--trace-gc-nvp, two pairs, load 16); peak RSS stayed 310-332 MB either way:
    // the rest is the plan (~30 MB live) and per-request garbage awaiting a full collection.
    let next = 0;
    const runner = async () => {
      for (;;) {
        const wait = this.directSlot();
        if (wait) await wait;
        const p = parts[next++];
        try {
          if (!p) return;
          if (!committed && this.stopReason !== undefined) throw this.stopReason;
          committed = true;
          // Perf: a plain cache's part is one blob: no array of it (client.ts readOneAt).
          if (this.batch) await this.client.readInto(digests.slice(p.start, p.end), data, p.offset);
          else await this.client.readOneAt(digests[p.start]!, data, p.offset);
        } finally {
          this.directRelease();
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(parts.length, this.client.concurrency) }, runner));
    this.planned += digests.length;
    return { source: this.client.server };
  }

  /**
   * A direct checkout's blob too large for memory: its bytes streamed to `sink`, unverified (the
   * caller hashes them as they pass), in one of the same slots as fetchBytes' requests.
   * (CheckoutOptions.fetchStream.)
   */
  async fetchStream(d: Digest, sink: (chunk: Buffer) => void, restart: () => void): Promise<{ source: string }> {
    await this.init();
    const wait = this.directSlot();
    if (wait) await wait;
    try {
      if (this.stopReason !== undefined) throw this.stopReason;
      await this.client.readStream(d, sink, restart);
    } finally {
      this.directRelease();
    }
    this.planned++;
    return { source: this.client.server };
  }

  /**
   * A slot for one request of fetchBytes, first come first served, at most `concurrency` at once:
   * requests wait here rather than in the HTTP pool, so stop() can keep them from starting.
   * Undefined when the slot is taken at once (no promise to await: one per request otherwise).
   */
  private directSlot(): Promise<void> | undefined {
    if (this.directInFlight < this.client.concurrency) {
      if (++this.directInFlight > this.directMaxInFlight) this.directMaxInFlight = this.directInFlight;
      return undefined;
    }
    return new Promise((resolve) => {
      this.directQueue.push(resolve);
      if (this.directQueue.length > this.directMaxWaiting) this.directMaxWaiting = this.directQueue.length;
    });
  }

  private directRelease(): void {
    const next = this.directQueue.shift();
    if (next) next(); // the slot passes on
    else this.directInFlight--;
  }

  /**
   * What this run held at most, for tests of the memory bounds: per-blob records of the scheduler
   * (blobs in flight or awaited), the store writer's gather buffers (made, and not yet back), and
   * requests of fetchBytes and fetchStream waiting for a slot.
   */
  held(): { maxTracked: number; gatherBuffers: number; gatherOutstanding: number; maxDirectWaiting: number } {
    return {
      maxTracked: this.scheduler?.maxTracked ?? 0,
      gatherBuffers: this.writer.allocated,
      gatherOutstanding: this.writer.outstanding,
      maxDirectWaiting: this.directMaxWaiting,
    };
  }

  /** Waits for every prefetched blob; returns the run's counters. */
  async finish(): Promise<FetchSummary> {
    try {
      this.prefetch();
      await this.scheduler!.drain();
    } catch (e) {
      await this.drain(e);
      throw e;
    }
    return this.summary();
  }

  /**
   * Fetches the whole tree under `root` into the local store. A tree an earlier pull left whole,
   * with no blob added or removed since (store/completeness.ts), needs no request and no read.
   */
  async pull(root: Digest): Promise<FetchSummary> {
    const done = pulledAlready(this.store, root);
    if (done) return done;
    try {
      await this.prepareTree(root, true);
    } catch (e) {
      await this.drain(e);
      throw e;
    }
    this.prefetch();
    const summary = await this.finish();
    await this.recordComplete(root, summary);
    return summary;
  }

  /**
   * Records the tree as whole: each shard folder's state first, then one more look that every
   * blob in it is there, so a removal racing this pull either shows in that look or changes the
   * state (store/completeness.ts, settledStateHolding).
   */
  private async recordComplete(root: Digest, summary: FetchSummary): Promise<void> {
    const state = await settledStateHolding(this.store.root, [...this.files, ...this.dirDigests], this.listingIsCheaper());
    if (state) markComplete(this.store.root, root, { state, directories: summary.directories, files: summary.files });
  }

  summary(): FetchSummary {
    const s = this.client.stats;
    return {
      root: this.root ? formatDigest(this.root) : '',
      directories: this.directories,
      files: this.files.length,
      fetched: s.fetched,
      fetchedBytes: s.fetchedBytes,
      skipped: this.skipped,
      retried: s.retried,
      requests: s.requests,
      maxInFlight: Math.max(this.scheduler?.maxInFlight ?? 0, this.directMaxInFlight),
      batch: this.batch,
    };
  }

  /** After a failure: start nothing new, let requests in flight complete (their blobs are kept). */
  private async drain(reason: unknown): Promise<void> {
    this.scheduler?.stop(reason);
    await this.scheduler?.idle();
  }
}
