/**
 * The public library API of treecast. Everything the CLI does goes through these functions.
 */
export { type Digest, EMPTY_DIGEST, digestOf, formatDigest, parseDigest, sameDigest } from './core/digest.js';
export {
  type Directory,
  type DirectoryNode,
  type FileNode,
  type SymlinkNode,
  decodeDirectory,
  directoryBlob,
  encodeDirectory,
  sortDirectory,
} from './core/reapi.js';
export { TreeBuilder, type TreeEntry } from './core/tree-builder.js';
export { diffTrees, type TreeChange } from './core/tree-diff.js';
export { type BlobStore } from './store/store.js';
export { LocalStore, defaultStorePath } from './store/local.js';
export { MemoryStore } from './store/memory.js';
export { TreeReader } from './store/tree-reader.js';
export { gcStore, verifyStore } from './store/maintenance.js';
export { snapshot, type SnapshotOptions, type SnapshotResult } from './capture/snapshot.js';
export { checkout, type CheckoutOptions, type CheckoutResult, type CheckoutMethod } from './materialize/checkout.js';
export { status, type StatusResult } from './materialize/status.js';
export { RemoteClient } from './remote/client.js';
export { RemoteFetcher } from './remote/fetch.js';
export { RemoteServer } from './remote/server.js';
export { push } from './remote/push.js';
export { HttpStore } from './store/http.js';
export { pack } from './archive/pack.js';
export { unpack } from './archive/unpack.js';
export { importArchive } from './archive/import.js';
export * from './errors.js';
