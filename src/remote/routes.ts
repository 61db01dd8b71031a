/**
 * Maps a request path to a route. Pure, and strict on purpose: a blob is named only by a path
 * segment matching /^[0-9a-f]{64}$/, so no route can name a file outside the store, and anything
 * percent-encoded, dotted or otherwise odd is simply not a route (400).
 *
 *   [/<instance>...]/cas/<sha256>                 Bazel HTTP cache blobs
 *   [/<instance>...]/ac/<sha256>                  Bazel action cache
 *   [/<instance>...]/status                       server status and capabilities
 *   [/<instance>...]/treecast/v1/missing|read|write   batch endpoints (wire.ts)
 *   [/<instance>...]/treecast/v1/tree/<sha256>/<size>  every Directory of a tree
 *
 * Bazel and bazel-remote allow an instance name before /cas/ and /ac/; treecast serves one store, so the
 * instance is accepted and ignored.
 */
import { type Digest, isHash } from '../core/digest.js';

export type Route =
  | { kind: 'cas'; hash: string }
  | { kind: 'ac'; hash: string }
  | { kind: 'status' }
  | { kind: 'batch'; op: 'missing' | 'read' | 'write' }
  | { kind: 'tree'; digest: Digest };

const SEGMENT_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const SIZE_RE = /^(0|[1-9][0-9]{0,15})$/;

/** The route for a raw request target (path plus optional query), or undefined when none. */
export function parseRoute(target: string): Route | undefined {
  const q = target.indexOf('?');
  const path = q >= 0 ? target.slice(0, q) : target;
  if (!path.startsWith('/') || path.length > 1024) return undefined;
  const parts = path.slice(1).split('/');
  if (parts.length > 16) return undefined;
  // Every instance segment must be a plain name: no '.', '..', empty parts or encoded bytes.
  const n = parts.length;
  const instanceOk = (upTo: number) => {
    for (let i = 0; i < upTo; i++) if (!SEGMENT_RE.test(parts[i]!)) return false;
    return true;
  };
  if (n >= 2 && (parts[n - 2] === 'cas' || parts[n - 2] === 'ac') && isHash(parts[n - 1]!) && instanceOk(n - 2)) {
    return parts[n - 2] === 'cas' ? { kind: 'cas', hash: parts[n - 1]! } : { kind: 'ac', hash: parts[n - 1]! };
  }
  if (n >= 1 && parts[n - 1] === 'status' && instanceOk(n - 1)) return { kind: 'status' };
  if (n >= 3 && parts[n - 3] === 'treecast' && parts[n - 2] === 'v1' && instanceOk(n - 3)) {
    const op = parts[n - 1];
    if (op === 'missing' || op === 'read' || op === 'write') return { kind: 'batch', op };
  }
  if (n >= 5 && parts[n - 5] === 'treecast' && parts[n - 4] === 'v1' && parts[n - 3] === 'tree' && instanceOk(n - 5)) {
    const hash = parts[n - 2]!;
    const size = parts[n - 1]!;
    if (isHash(hash) && SIZE_RE.test(size) && Number.isSafeInteger(Number(size))) return { kind: 'tree', digest: { hash, size: Number(size) } };
  }
  return undefined;
}
