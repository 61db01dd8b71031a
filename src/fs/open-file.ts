/**
 * `fs.openSync` whose failure is the typed file-system error naming the path: every reader and
 * writer of archives, sources and store files opens this way, so none reports a bare errno.
 */
import * as fs from 'node:fs';
import { fsError } from '../errors.js';

export function openFile(path: string, flags: fs.OpenMode, action: string, mode?: fs.Mode): number {
  try {
    return fs.openSync(path, flags, mode);
  } catch (e) {
    throw fsError(e, action, path);
  }
}
