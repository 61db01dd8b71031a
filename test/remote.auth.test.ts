import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { TokenChecker, resolveServerToken, resolveToken } from '../src/remote/auth.js';
import { UsageError } from '../src/errors.js';
import { removeDir, tempDir } from './helpers/remote.js';

test('only the exact bearer token passes', () => {
  const c = new TokenChecker('s3cret-token');
  assert.equal(c.check('Bearer s3cret-token'), true);
  assert.equal(c.check('bearer s3cret-token'), true);
  assert.equal(c.check('Bearer s3cret-toke'), false);
  assert.equal(c.check('Bearer s3cret-token2'), false);
  assert.equal(c.check('Basic s3cret-token'), false);
  assert.equal(c.check('s3cret-token'), false);
  assert.equal(c.check(''), false);
  assert.equal(c.check(undefined), false);
});

test('tokens come from --token, --token-file, then TREECAST_TOKEN', () => {
  const dir = tempDir('auth');
  try {
    const f = join(dir, 'tok');
    fs.writeFileSync(f, 'from-file\nsecond line\n');
    assert.equal(resolveToken({ token: 'flag' }, { TREECAST_TOKEN: 'env' }), 'flag');
    assert.equal(resolveToken({ tokenFile: f }, { TREECAST_TOKEN: 'env' }), 'from-file');
    assert.equal(resolveToken({}, { TREECAST_TOKEN: 'env' }), 'env');
    assert.equal(resolveToken({}, {}), undefined);
    assert.throws(() => resolveToken({ token: 'a', tokenFile: f }, {}), UsageError);
    assert.throws(() => resolveToken({ token: 'has space' }, {}), UsageError);
    fs.writeFileSync(f, '\n');
    assert.throws(() => resolveToken({ tokenFile: f }, {}), /empty/);
  } finally {
    removeDir(dir);
  }
});

test('a server refuses TREECAST_TOKEN set but empty (an unset shell variable) rather than serving with no token', () => {
  assert.throws(() => resolveServerToken({}, { TREECAST_TOKEN: '' }), (e: unknown) => e instanceof UsageError && /TREECAST_TOKEN is set but empty/.test(e.message));
  assert.equal(resolveServerToken({ token: 'flag' }, { TREECAST_TOKEN: '' }), 'flag');
  assert.equal(resolveServerToken({}, {}), undefined, 'no variable at all: a server without a token, as asked');
  assert.equal(resolveServerToken({}, { TREECAST_TOKEN: 'env' }), 'env');
  // A client with an empty variable just sends no token.
  assert.equal(resolveToken({}, { TREECAST_TOKEN: '' }), undefined);
});
