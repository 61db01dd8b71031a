/**
 * Retry policy for remote requests. Pure: which failures are worth another try, and how long to
 * wait before it. Kept apart from the client so the rules are unit-tested without a network.
 *
 * Retried: connection errors and timeouts (the request may never have reached the server), 429 and
 * 5xx (the server said "later"). Never retried: other 4xx (the request itself is wrong; sending it
 * again gives the same answer) and 501/505/507 (retrying cannot help). Integrity failures are not
 * retried either: a server that sent wrong bytes once is not trusted to send right ones.
 */

export interface RetryPolicy {
  /** Retries after the first attempt (0: no retries). */
  retries: number;
  /** First backoff, in ms; doubles each attempt. */
  baseMs: number;
  /** Largest backoff, in ms. */
  maxMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { retries: 5, baseMs: 100, maxMs: 10_000 };

/** undici and Node error codes that mean the connection failed or stalled, not the request. */
const TRANSIENT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
  'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  'ERR_TREECAST_REMOTE_TRUNCATED',
]);

const NO_RETRY_5XX = new Set([501, 505, 507]);

export function isRetryableStatus(status: number): boolean {
  return status === 429 || (status >= 500 && status <= 599 && !NO_RETRY_5XX.has(status));
}

/** True when `err` (thrown by a request) is a transient failure worth retrying. */
export function isRetryableError(err: unknown): boolean {
  const e = err as { code?: string; status?: number; cause?: unknown } | undefined;
  if (!e) return false;
  if (typeof e.status === 'number') return isRetryableStatus(e.status);
  if (e.code && TRANSIENT_CODES.has(e.code)) return true;
  // undici wraps socket errors; look one level down.
  const c = e.cause as { code?: string } | undefined;
  return !!c?.code && TRANSIENT_CODES.has(c.code);
}

/**
 * Delay before retry number `attempt` (1-based): exponential with full jitter (uniform in
 * [0, min(max, base * 2^(attempt-1))]), so many clients that failed together do not retry together.
 * A server's Retry-After (seconds) raises the delay, capped at `maxMs`.
 */
export function backoffMs(attempt: number, policy: RetryPolicy, random: () => number = Math.random, retryAfterS?: number): number {
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(attempt - 1, 30));
  const jittered = Math.floor(random() * ceiling);
  if (retryAfterS !== undefined && Number.isFinite(retryAfterS) && retryAfterS > 0) {
    return Math.min(policy.maxMs, Math.max(jittered, retryAfterS * 1000));
  }
  return jittered;
}

/** Parses a Retry-After header given in seconds (the HTTP-date form is ignored). */
export function parseRetryAfter(v: string | string[] | undefined): number | undefined {
  const s = Array.isArray(v) ? v[0] : v;
  if (!s || !/^\d{1,6}$/.test(s.trim())) return undefined;
  return Number(s.trim());
}
