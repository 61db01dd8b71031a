/**
 * What every store offers: blobs by digest. The local disk store, the HTTP client store and the
 * in-memory test store all implement it, so capture, checkout, push and pull work against any.
 */
import type { Digest } from '../core/digest.js';

export interface BlobStore {
  /** True when the blob is present (the empty blob always is). */
  has(digest: Digest): Promise<boolean>;
  /** The blob's bytes, verified against the digest. Throws BlobNotFoundError when absent. */
  get(digest: Digest): Promise<Buffer>;
  /** Stores bytes after checking them against `expected` when given; returns their digest. */
  put(bytes: Uint8Array, expected?: Digest): Promise<Digest>;
}
