/**
 * A BlobStore over HTTP (the Bazel HTTP cache protocol): lets code written against BlobStore
 * (TreeReader, tests) read from or write to a remote cache directly. Bulk transfers use
 * remote/fetch.ts and remote/push.ts instead, which batch and keep a window of requests in flight.
 */
import { type Digest, EMPTY_DIGEST, digestOf, formatDigest, sameDigest } from '../core/digest.js';
import { DigestMismatchError } from '../errors.js';
import { type ClientOptions, RemoteClient } from '../remote/client.js';
import type { BlobStore } from './store.js';

export class HttpStore implements BlobStore {
  readonly client: RemoteClient;

  constructor(client: RemoteClient | ClientOptions) {
    this.client = client instanceof RemoteClient ? client : new RemoteClient(client);
  }

  has(digest: Digest): Promise<boolean> {
    return this.client.has(digest);
  }

  /** The blob's bytes, verified; BlobNotFoundError when the server lacks it. */
  get(digest: Digest): Promise<Buffer> {
    return this.client.getBytes(digest);
  }

  async put(bytes: Uint8Array, expected?: Digest): Promise<Digest> {
    const d = digestOf(bytes);
    if (expected && !sameDigest(d, expected)) {
      throw new DigestMismatchError(`bytes hash to ${formatDigest(d)}, not ${formatDigest(expected)}; not sent`, { digest: formatDigest(expected) });
    }
    if (d.size === 0) return EMPTY_DIGEST;
    await this.client.putBytes(bytes, d);
    return d;
  }

  close(): Promise<void> {
    return this.client.close();
  }
}
