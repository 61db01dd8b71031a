/**
 * The operations a worker thread can run, by name. Each takes a plain-data batch and returns plain
 * data; each keeps whatever per-thread state it needs in the OpContext (opened once per thread).
 */
import { LocalStore } from '../store/local.js';
import { ingestBatch } from '../capture/ingest-op.js';
import { applyBatch } from '../materialize/apply-op.js';
import { extractBatch } from '../archive/extract-op.js';
import { ingestArchiveBatch } from '../archive/ingest-op.js';
import { compressBatch } from '../archive/pack-op.js';

export interface OpContextInit {
  /** Root of the local store the batch reads or writes. */
  storeRoot?: string;
}

export interface OpContext {
  readonly store: LocalStore;
  /** Scratch state an op keeps across batches in one thread (e.g. the import method per device). */
  readonly state: Map<string, unknown>;
}

const ops = {
  'capture.ingest': ingestBatch,
  'materialize.apply': applyBatch,
  'archive.extract': extractBatch,
  'archive.ingest': ingestArchiveBatch,
  'archive.compress': compressBatch,
} satisfies Record<string, (payload: never, ctx: OpContext) => unknown>;

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

export function runOp(op: OpName, payload: unknown, init: OpContextInit): unknown {
  const fn = ops[op] as (payload: unknown, ctx: OpContext) => unknown;
  if (!fn) throw new Error(`unknown worker op '${op}'`);
  return fn(payload, contextFor(init));
}
