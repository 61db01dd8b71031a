/** A BlobStore held in memory, for tests and for planning without a disk. */
import { type Digest, EMPTY_DIGEST, digestOf, formatDigest, sameDigest } from '../core/digest.js';
import { BlobNotFoundError, DigestMismatchError } from '../errors.js';
import type { BlobStore } from './store.js';

export class MemoryStore implements BlobStore {
  readonly blobs = new Map<string, Buffer>();

  async has(digest: Digest): Promise<boolean> {
    return digest.size === 0 || this.blobs.has(digest.hash);
  }

  async get(digest: Digest): Promise<Buffer> {
    if (digest.size === 0) return Buffer.alloc(0);
    const b = this.blobs.get(digest.hash);
    if (!b) throw new BlobNotFoundError(`blob ${formatDigest(digest)} is not in the store`, { digest: formatDigest(digest) });
    return b;
  }

  async put(bytes: Uint8Array, expected?: Digest): Promise<Digest> {
    const d = digestOf(bytes);
    if (expected && !sameDigest(d, expected)) {
      throw new DigestMismatchError(`bytes hash to ${formatDigest(d)}, not ${formatDigest(expected)}`, { digest: formatDigest(expected) });
    }
    if (d.size > 0) this.blobs.set(d.hash, Buffer.from(bytes));
    return d.size === 0 ? EMPTY_DIGEST : d;
  }
}
