/**
 * Remote URL checks, apart from the HTTP client so a command can refuse a bad URL without loading
 * it (a pull with nothing to fetch never does).
 */
import { UsageError } from '../errors.js';

/** Parses and checks a remote URL (http only; credentials in the URL are refused, use a token). */
export function parseRemoteUrl(s: string): URL {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new UsageError(`'${s}' is not a URL`, { hint: 'remote URLs look like http://127.0.0.1:9090/' });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`unsupported URL scheme '${u.protocol}': use http:// or https://`);
  if (u.username || u.password) throw new UsageError('put credentials in --token, --token-file or TREECAST_TOKEN, not in the URL');
  if (u.search || u.hash) throw new UsageError('a remote URL takes no query or fragment');
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  return u;
}
