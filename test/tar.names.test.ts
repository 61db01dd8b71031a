/**
 * Names as the tar parser reads them from a header: the name field, the ustar prefix joined with
 * '/', and the link name, each ended by NUL or by its field's width. ASCII fields are read as
 * strings directly and every other field is decoded as strict UTF-8; the result must be the same
 * either way, in every mix (an ASCII prefix with a UTF-8 name and the other way round), and a field
 * that is not UTF-8 must still be refused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TarParser, type TarHeader } from '../src/archive/tar-parser.js';
import { UnsafePathError } from '../src/errors.js';
import { tarHeader } from './helpers/tar-craft.js';

/** One header (a symlink, so no data) with `prefix` in the ustar prefix field, then the end-of-archive marker. */
function archive(name: Buffer, prefix: Buffer, linkname: Buffer): Buffer {
  const h = tarHeader({ name, type: '2', size: 0, mode: 0o777, mtime: 0, linkname, uid: 0, gid: 0 });
  prefix.copy(h, 345, 0, Math.min(155, prefix.length));
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of h) sum += c;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return Buffer.concat([h, Buffer.alloc(1024)]);
}

function parse(bytes: Buffer): TarHeader {
  const got: TarHeader[] = [];
  const p = new TarParser({ entry: (h) => (got.push(h), false), data: () => {} }, 'test');
  p.push(bytes);
  p.end();
  assert.equal(got.length, 1);
  return got[0]!;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
/** What a field holds: its bytes up to the first NUL or its width, as UTF-8 (undefined: not UTF-8). */
function expected(b: Buffer, width: number): string | undefined {
  const cut = b.subarray(0, width);
  const end = cut.indexOf(0);
  try {
    return utf8.decode(end < 0 ? cut : cut.subarray(0, end));
  } catch {
    return undefined;
  }
}

test('names, ustar prefixes and link names read alike whether ASCII or UTF-8, and a field that is not UTF-8 is refused', () => {
  const fields = [
    Buffer.from('plain/ascii-name.c'),
    Buffer.from('n'.repeat(100)), // fills the name field: no NUL
    Buffer.from(`${'p'.repeat(99)}\u00e9`), // a two-byte character cut by the field's end: not UTF-8
    Buffer.from('caf\u00e9/\u65e5\u672c.txt'),
    Buffer.from('x\u007fy'),
    Buffer.from([0x61, 0xff, 0x62]), // not UTF-8
    Buffer.from([0x61, 0x00, 0xff]), // NUL ends the field before the bad byte
    Buffer.from('\u00e9'),
  ];
  const prefixes = [Buffer.alloc(0), Buffer.from('top/dir'), Buffer.from('d\u00e9j\u00e0'), Buffer.from([0x70, 0xc3]), Buffer.from('q'.repeat(155))];
  let refused = 0;
  let read = 0;
  for (const name of fields) {
    if (name.length === 0 || name[0] === 0) continue;
    for (const prefix of prefixes) {
      for (const link of [Buffer.alloc(0), ...fields]) {
        const n = expected(name, 100);
        const pre = prefix.length > 0 ? expected(prefix, 155) : '';
        const l = expected(link, 100);
        const bytes = archive(name, prefix, link);
        const what = `name ${name.toString('hex')}, prefix ${prefix.toString('hex')}, link ${link.toString('hex')}`;
        // (a prefix that is not UTF-8 spoils the whole name it is joined to)
        if (n === undefined || pre === undefined || l === undefined) {
          assert.throws(() => parse(bytes), UnsafePathError, what);
          refused++;
          continue;
        }
        const h = parse(bytes);
        assert.equal(h.name, pre === '' ? n : `${pre}/${n}`, what);
        assert.equal(h.linkname, l, what);
        read++;
      }
    }
  }
  assert.ok(refused > 50 && read > 50, `refused ${refused}, read ${read}`);
});
