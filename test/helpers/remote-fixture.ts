/**
 * The setup most remote tests share: a temp directory, a synthetic tree snapshotted into the store
 * a treecast server serves, and that server on a free loopback port; stopped and removed after the
 * tests, even when they fail.
 */
import { after, before } from 'node:test';
import { join } from 'node:path';
import { type Digest, formatDigest } from '../../src/core/digest.js';
import { snapshot } from '../../src/capture/snapshot.js';
import { LocalStore } from '../../src/store/local.js';
import type { ServerOptions } from '../../src/remote/server.js';
import { type TestServer, makeTree, removeDir, startServer, tempDir } from './remote.js';

export interface RemoteFixture {
  /** A temp directory of its own. */
  dir: string;
  /** `dir/src`: the tree (with `tree`). */
  src: string;
  /** `dir/server`: the store the tree is snapshotted into and the server serves. */
  serverStore: string;
  /** The tree's digest (with `tree`). */
  rootDigest: Digest;
  /** The same, formatted as the CLI takes it. */
  root: string;
  /** The server over `serverStore` (unless `server: false`). */
  server: TestServer;
}

export interface RemoteFixtureOptions {
  /** `makeTree(src, dirs, files, bigBytes)`, then `more(src)`, then a snapshot into `serverStore`. */
  tree?: { dirs: number; files: number; bigBytes?: number; more?: (src: string) => void };
  /** The server's options; false: start none (a test starts its own). */
  server?: Partial<ServerOptions> | false;
}

/**
 * Registers `before` and `after` hooks in the current file or describe() that set up (and remove)
 * a RemoteFixture. Its fields are filled in once `before` ran; `ready` is then called with it, so
 * a file can keep its own short names for what it uses.
 */
export function useRemoteFixture(tag: string, opts: RemoteFixtureOptions = {}, ready?: (f: RemoteFixture) => void): RemoteFixture {
  const f = {} as RemoteFixture;
  before(async () => {
    f.dir = tempDir(tag);
    f.src = join(f.dir, 'src');
    f.serverStore = join(f.dir, 'server');
    if (opts.tree) {
      makeTree(f.src, opts.tree.dirs, opts.tree.files, opts.tree.bigBytes);
      opts.tree.more?.(f.src);
      f.rootDigest = (await snapshot(f.src, { store: LocalStore.open(f.serverStore) })).digest;
      f.root = formatDigest(f.rootDigest);
    }
    if (opts.server !== false) f.server = await startServer(f.serverStore, opts.server);
    ready?.(f);
  });
  after(async () => {
    await f.server?.close();
    if (f.dir) removeDir(f.dir);
  });
  return f;
}
