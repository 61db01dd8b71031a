import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_RETRY, backoffMs, isRetryableError, isRetryableStatus, parseRetryAfter } from '../src/remote/retry.js';
import { DigestMismatchError, RemoteError } from '../src/errors.js';

test('429 and 5xx are retried; other 4xx and 501/505/507 are not', () => {
  for (const s of [429, 500, 502, 503, 504]) assert.equal(isRetryableStatus(s), true, String(s));
  for (const s of [400, 401, 403, 404, 405, 413, 501, 505, 507]) assert.equal(isRetryableStatus(s), false, String(s));
});

test('connection errors and timeouts are retried, integrity failures never', () => {
  assert.equal(isRetryableError(Object.assign(new Error('x'), { code: 'ECONNRESET' })), true);
  assert.equal(isRetryableError(Object.assign(new Error('x'), { code: 'UND_ERR_BODY_TIMEOUT' })), true);
  assert.equal(isRetryableError(Object.assign(new Error('x'), { code: 'UND_ERR_SOCKET', cause: { code: 'EPIPE' } })), true);
  assert.equal(isRetryableError(new TypeError('fetch failed', { cause: { code: 'ECONNREFUSED' } })), true);
  assert.equal(isRetryableError(new RemoteError('x', { status: 503 })), true);
  assert.equal(isRetryableError(new RemoteError('x', { status: 404 })), false);
  assert.equal(isRetryableError(new DigestMismatchError('bad bytes')), false);
  assert.equal(isRetryableError(undefined), false);
});

test('backoff grows exponentially, is capped, and is jittered below the ceiling', () => {
  const p = { ...DEFAULT_RETRY, baseMs: 100, maxMs: 1000 };
  assert.equal(backoffMs(1, p, () => 0.999), 99);
  assert.equal(backoffMs(3, p, () => 0.999), 399);
  assert.equal(backoffMs(10, p, () => 0.999), 999);
  assert.equal(backoffMs(50, p, () => 0.5), 500);
  assert.equal(backoffMs(2, p, () => 0), 0);
  for (let i = 0; i < 100; i++) {
    const v = backoffMs(4, p);
    assert.ok(v >= 0 && v < 800);
  }
});

test('Retry-After raises the delay, within the cap', () => {
  const p = { ...DEFAULT_RETRY, baseMs: 100, maxMs: 5000 };
  assert.equal(backoffMs(1, p, () => 0, 2), 2000);
  assert.equal(backoffMs(1, p, () => 0, 60), 5000);
  assert.equal(parseRetryAfter('3'), 3);
  assert.equal(parseRetryAfter(['7']), 7);
  assert.equal(parseRetryAfter('Wed, 21 Oct 2015 07:28:00 GMT'), undefined);
  assert.equal(parseRetryAfter(undefined), undefined);
});
