/**
 * Bearer tokens: where a command finds one, and how the server checks one.
 *
 * The server compares SHA-256 hashes of the presented and expected tokens with timingSafeEqual:
 * hashing first gives equal-length inputs, so neither the token's content nor its length leaks
 * through timing. Tokens are never printed; errors say only that one was missing or wrong.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { UsageError, fsError } from '../errors.js';

export interface TokenOptions {
  token?: string;
  tokenFile?: string;
}

/** --token, then --token-file (first line, trimmed), then TREECAST_TOKEN; undefined when none. */
export function resolveToken(opts: TokenOptions, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (opts.token !== undefined && opts.tokenFile !== undefined) throw new UsageError('give either --token or --token-file, not both');
  let token = opts.token;
  if (opts.tokenFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(opts.tokenFile, 'utf8');
    } catch (e) {
      throw fsError(e, 'cannot read token file', opts.tokenFile);
    }
    token = text.split('\n')[0]!.trim();
    if (!token) throw new UsageError(`token file ${opts.tokenFile} is empty`);
  }
  if (token === undefined && env.TREECAST_TOKEN) token = env.TREECAST_TOKEN;
  if (token !== undefined) checkToken(token);
  return token;
}

/**
 * The token a server requires. TREECAST_TOKEN set but empty, with no --token or --token-file, is
 * refused: it is what `TREECAST_TOKEN=$SECRET treecast serve` gives when SECRET is unset, and
 * taking it as no token would start a server anyone can write to (as an empty --token is refused).
 */
export function resolveServerToken(opts: TokenOptions, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (opts.token === undefined && opts.tokenFile === undefined && env.TREECAST_TOKEN === '') {
    throw new UsageError('TREECAST_TOKEN is set but empty: the server would require no token', {
      hint: 'is a shell variable unset? Give the token, or unset TREECAST_TOKEN to serve without one',
    });
  }
  return resolveToken(opts, env);
}

/** Tokens go into an HTTP header, so they must be visible ASCII without spaces. */
export function checkToken(token: string): void {
  if (!/^[\x21-\x7e]{1,4096}$/.test(token)) throw new UsageError('the token must be 1-4096 visible ASCII characters without spaces');
}

function sha(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** A checker for `Authorization` headers against one expected token. */
export class TokenChecker {
  private readonly expected: Buffer;
  constructor(token: string) {
    checkToken(token);
    this.expected = sha(token);
  }

  /** True when the header is `Bearer <expected token>` (scheme case-insensitive). */
  check(header: string | undefined): boolean {
    const m = header ? /^bearer[ \t]+(\S+)[ \t]*$/i.exec(header) : null;
    // Hash even when absent so a missing header costs the same as a wrong one.
    const given = sha(m ? m[1]! : '');
    return timingSafeEqual(given, this.expected) && m !== null;
  }
}
