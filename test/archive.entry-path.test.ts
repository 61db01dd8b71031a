/**
 * entryPath (entry-rules.ts), which judges every zip and tar name: its whole-name fast path must
 * accept exactly what the part-by-part check accepts, with the same path. Checked on a table of
 * edge cases and on random names built from the characters that matter ('.', '/', '\\', ':', NUL,
 * non-ASCII) against a plain statement of the rules.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { entryPath } from '../src/archive/entry-rules.js';
import { MAX_DEPTH, nameProblem } from '../src/core/names.js';
import { UnsafePathError } from '../src/errors.js';

/** The rules, stated plainly: the path entryPath must return, or null when it must refuse. */
function expected(name: string): { path: string; slash: boolean } | null {
  if (Buffer.byteLength(name) > 4096 || name.includes('\0') || name.includes('\\') || name.startsWith('/') || /^[A-Za-z]:/.test(name)) return null;
  const slash = name.endsWith('/');
  const path = slash ? name.slice(0, -1) : name;
  const parts = path.split('/');
  if (parts.length > MAX_DEPTH || parts.some((p) => p === '..' || nameProblem(p) !== null)) return null;
  return { path, slash };
}

function check(name: string): void {
  const want = expected(name);
  const shown = JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}... (${name.length})` : name);
  if (want === null) assert.throws(() => entryPath(name), UnsafePathError, `${shown} must be refused`);
  else assert.deepEqual(entryPath(name), want, `${shown} must be accepted`);
}

test('edge cases of names: dots, empty parts, separators, drive letters, lengths and depth', () => {
  const cases = [
    'a', 'a/', 'a/b', 'a/b/', 'dir/file.c', 'x y/z~', '.', '..', './a', '../a', 'a/.', 'a/..', 'a/./b', 'a/../b', 'a/.b', '.a/b', 'a/..b',
    'a..', 'a/b.', '...', 'a//b', '//', '/', '', '/a', 'a/b//', 'a\\b', 'a\0b', 'C:', 'C:/x', 'c:x', '1:x', 'a/C:', 'é', 'a/é/', 'a/\ud800',
    'n'.repeat(255), 'n'.repeat(256), `a/${'n'.repeat(255)}/`, `a/${'n'.repeat(256)}`, 'é'.repeat(128), 'é'.repeat(127),
    // Depth: 1,024 parts are allowed, 1,025 are not; the longest simple names sit at the fast path's bound.
    `${'a/'.repeat(1023)}a`, `${'a/'.repeat(1023)}a/`, `${'a/'.repeat(1024)}a`, `${'a/'.repeat(1023)}ab`, `${'ab/'.repeat(682)}a`,
    `${'n'.repeat(255)}/`.repeat(16), `${`${'n'.repeat(255)}/`.repeat(16)}x`, `${`${'n'.repeat(254)}/`.repeat(16)}`,
  ];
  for (const name of cases) check(name);
});

test('random names: accepted and refused exactly as the rules say', () => {
  let seed = 12345;
  const next = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed >>> 8;
  };
  const alphabet = ['a', 'b', '.', '.', '/', '/', '\\', ':', 'C', ' ', '~', 'é', '\0', '..', './', '/.'];
  for (let i = 0; i < 50_000; i++) {
    let name = '';
    const len = next() % 12;
    for (let j = 0; j < len; j++) name += alphabet[next() % alphabet.length];
    check(name);
  }
});
