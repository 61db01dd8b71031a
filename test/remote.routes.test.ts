import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRoute } from '../src/remote/routes.js';

const H = 'a'.repeat(64);

test('blob paths with and without an instance prefix', () => {
  assert.deepEqual(parseRoute(`/cas/${H}`), { kind: 'cas', hash: H });
  assert.deepEqual(parseRoute(`/ci/main/cas/${H}`), { kind: 'cas', hash: H });
  assert.deepEqual(parseRoute(`/cas/${H}?x=1`), { kind: 'cas', hash: H });
  assert.deepEqual(parseRoute(`/ac/${H}`), { kind: 'ac', hash: H });
  assert.deepEqual(parseRoute('/status'), { kind: 'status' });
  assert.deepEqual(parseRoute('/inst/treecast/v1/read'), { kind: 'batch', op: 'read' });
  assert.deepEqual(parseRoute(`/treecast/v1/tree/${H}/123`), { kind: 'tree', digest: { hash: H, size: 123 } });
});

test('anything that could name a file outside the store is not a route', () => {
  for (const p of [
    `/cas/${H.toUpperCase()}`,
    `/cas/${H}0`,
    `/cas/${H.slice(1)}`,
    `/cas/../${H}`,
    `/../cas/${H}`,
    `/./cas/${H}`,
    `/%2e%2e/cas/${H}`,
    `//cas/${H}`,
    `/cas/${H}/`,
    `/cas/..%2f..%2fetc%2fpasswd`,
    '/cas/../../etc/passwd',
    `/cas/${H}/../../x`,
    'cas/' + H,
    '',
    `/treecast/v1/tree/${H}/01`,
    `/treecast/v1/tree/${H}/-1`,
    `/treecast/v1/delete`,
    `${'/x'.repeat(20)}/cas/${H}`,
  ]) {
    assert.equal(parseRoute(p), undefined, p);
  }
});
