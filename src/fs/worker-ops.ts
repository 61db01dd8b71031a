/**
 * The operations a worker thread can run, by name. Each takes a plain-data batch and returns plain
 * data; each keeps whatever per-thread state it needs in the OpContext (opened once per thread).
 */
import { LocalStore } from '../store/local.js';

export interface OpContextInit {
  /** Root of the local store the batch reads or writes. */
  storeRoot?: string;
}

export interface OpContext {
  readonly store: LocalStore;
  /** Scratch state an op keeps across batches in one thread (e.g. the import method per device). */
  readonly state: Map<string, unknown>;
}

type OpFn = (payload: never, ctx: OpContext) => unknown;

/**
 * Op modules are imported on first use in each thread. Perf: a checkout's workers then do not load
 * zlib and streams for the archive ops; eager imports made worker start-up ~0.15 s slower.
 */
const ops = {
  'capture.ingest': async () => (await import('../capture/ingest-op.js')).ingestBatch,
  'capture.stat': async () => (await import('../capture/ingest-op.js')).statBatch,
  'materialize.apply': async () => (await import('../materialize/apply-op.js')).applyBatch,
  'archive.extract': async () => (await import('../archive/extract-op.js')).extractBatch,
  'archive.ingest': async () => (await import('../archive/ingest-op.js')).ingestArchiveBatch,
  'archive.stage': async () => (await import('../archive/ingest-op.js')).stageArchiveBatch,
  'archive.write': async () => (await import('../archive/tar-write-op.js')).writeDataBatch,
  'archive.links': async () => (await import('../archive/tar-write-op.js')).writeLinks,
  'archive.dirmeta': async () => (await import('../archive/tar-write-op.js')).setDirMeta,
  'archive.store': async () => (await import('../archive/ingest-op.js')).storeDataBatch,
  'archive.compress': async () => (await import('../archive/pack-op.js')).compressBatch,
} satisfies Record<string, () => Promise<OpFn>>;

export type OpName = keyof typeof ops;

const contexts = new Map<string, OpContext>();

function contextFor(init: OpContextInit): OpContext {
  const key = init.storeRoot ?? '';
  let ctx = contexts.get(key);
  if (!ctx) {
    ctx = { store: new LocalStore(init.storeRoot ?? '/nonexistent-store'), state: new Map() };
    contexts.set(key, ctx);
  }
  return ctx;
}

const loaded = new Map<OpName, (payload: unknown, ctx: OpContext) => unknown>();

export async function runOp(op: OpName, payload: unknown, init: OpContextInit): Promise<unknown> {
  let fn = loaded.get(op);
  if (!fn) {
    const load = ops[op];
    if (!load) throw new Error(`unknown worker op '${op}'`);
    fn = (await load()) as (payload: unknown, ctx: OpContext) => unknown;
    loaded.set(op, fn);
  }
  return fn(payload, contextFor(init));
}
