/**
 * Hostile Zip64 records: end records and locators inconsistent with the file, Zip64 extra fields
 * whose sizes or offsets disagree with the data or point past the end, counts that overflow. Each
 * is refused by unpack and import with exit 6, and nothing is written. The well-formed archive the
 * cases are made from is checked by Info-ZIP first, so every refusal is of the damage alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { scratchDir } from './helpers/zip-craft.js';

const bin = new URL('../../bin/treecast', import.meta.url).pathname;
const U32 = 0xffffffff;

interface Damage {
  /** Values written in the central Zip64 extra field of entry 0 instead of the real ones. */
  extraSize?: bigint;
  extraCompressedSize?: bigint;
  extraOffset?: bigint;
  /** Entry 0's Zip64 extra holds one 8-byte value where three are needed. */
  shortExtra?: boolean;
  /** Entry 0 says 0xFFFFFFFF everywhere but carries no Zip64 extra field. */
  noExtra?: boolean;
  /** Zip64 end record fields. */
  recordSize?: bigint;
  count?: bigint;
  cdSize?: bigint;
  cdOffset?: bigint;
  /** The locator's offset of the Zip64 end record. */
  locatorOffset?: bigint;
  /** The 16-bit entry count of the classic end record (0xFFFF says "see Zip64"). */
  count16?: number;
}

const ENTRIES = [
  { name: 'a.txt', data: Buffer.from('alpha '.repeat(200)) },
  { name: 'b.txt', data: Buffer.from('bravo '.repeat(300)) },
];

/** A Zip64 archive of ENTRIES (every size and offset through Zip64 fields, as for >4 GiB), with `d` applied. */
function zip64(d: Damage = {}): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let pos = 0;
  ENTRIES.forEach((e, i) => {
    const packed = zlib.deflateRawSync(e.data);
    const crc = zlib.crc32(e.data) >>> 0;
    const name = Buffer.from(e.name);
    const local = Buffer.alloc(30 + name.length + 20);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(45, 4);
    local.writeUInt16LE(0x800, 6);
    local.writeUInt16LE(8, 8);
    local.writeUInt16LE(0x21, 12); // 1980-01-01
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(U32, 18);
    local.writeUInt32LE(U32, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(20, 28);
    name.copy(local, 30);
    local.writeUInt16LE(1, 30 + name.length);
    local.writeUInt16LE(16, 32 + name.length);
    local.writeBigUInt64LE(BigInt(e.data.length), 34 + name.length);
    local.writeBigUInt64LE(BigInt(packed.length), 42 + name.length);
    const offset = pos;
    parts.push(local, packed);
    pos += local.length + packed.length;

    const damaged = i === 0;
    const extraLen = damaged && d.noExtra ? 0 : damaged && d.shortExtra ? 12 : 28;
    const c = Buffer.alloc(46 + name.length + extraLen);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE((3 << 8) | 45, 4);
    c.writeUInt16LE(45, 6);
    c.writeUInt16LE(0x800, 8);
    c.writeUInt16LE(8, 10);
    c.writeUInt16LE(0x21, 14);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(U32, 20);
    c.writeUInt32LE(U32, 24);
    c.writeUInt16LE(name.length, 28);
    c.writeUInt16LE(extraLen, 30);
    c.writeUInt32LE((0o100644 << 16) >>> 0, 38);
    c.writeUInt32LE(U32, 42);
    name.copy(c, 46);
    if (extraLen > 0) {
      const x = 46 + name.length;
      c.writeUInt16LE(1, x);
      c.writeUInt16LE(extraLen - 4, x + 2);
      c.writeBigUInt64LE((damaged ? d.extraSize : undefined) ?? BigInt(e.data.length), x + 4);
      if (extraLen === 28) {
        c.writeBigUInt64LE((damaged ? d.extraCompressedSize : undefined) ?? BigInt(packed.length), x + 12);
        c.writeBigUInt64LE((damaged ? d.extraOffset : undefined) ?? BigInt(offset), x + 20);
      }
    }
    central.push(c);
  });
  const cd = Buffer.concat(central);
  const cdOffset = pos;
  const z64Pos = cdOffset + cd.length;
  const z = Buffer.alloc(56);
  z.writeUInt32LE(0x06064b50, 0);
  z.writeBigUInt64LE(d.recordSize ?? 44n, 4);
  z.writeUInt16LE((3 << 8) | 45, 12);
  z.writeUInt16LE(45, 14);
  z.writeBigUInt64LE(d.count ?? BigInt(ENTRIES.length), 24);
  z.writeBigUInt64LE(d.count ?? BigInt(ENTRIES.length), 32);
  z.writeBigUInt64LE(d.cdSize ?? BigInt(cd.length), 40);
  z.writeBigUInt64LE(d.cdOffset ?? BigInt(cdOffset), 48);
  const loc = Buffer.alloc(20);
  loc.writeUInt32LE(0x07064b50, 0);
  loc.writeBigUInt64LE(d.locatorOffset ?? BigInt(z64Pos), 8);
  loc.writeUInt32LE(1, 16);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(d.count16 ?? 0xffff, 8);
  eocd.writeUInt16LE(d.count16 ?? 0xffff, 10);
  eocd.writeUInt32LE(U32, 12);
  eocd.writeUInt32LE(U32, 16);
  return Buffer.concat([...parts, cd, z, loc, eocd]);
}

function tc(args: string[], store: string) {
  return spawnSync(process.execPath, [bin, ...args, '--json'], { encoding: 'utf8', env: { ...process.env, TREECAST_STORE: store } });
}

test('the undamaged Zip64 archive is valid (Info-ZIP) and unpacks', () => {
  const dir = scratchDir('tc-zip64');
  const zip = join(dir, 'ok.zip');
  fs.writeFileSync(zip, zip64());
  const t = spawnSync('unzip', ['-t', zip], { encoding: 'utf8' });
  assert.equal(t.status, 0, `unzip -t: ${t.stdout}${t.stderr}`);
  const r = tc(['unpack', zip, join(dir, 'out')], join(dir, 'store'));
  assert.equal(r.status, 0, r.stderr);
  for (const e of ENTRIES) assert.deepEqual(fs.readFileSync(join(dir, 'out', e.name)), e.data);
});

const cases: [string, Damage, RegExp][] = [
  ['the locator points past the end of the file', { locatorOffset: 1n << 40n }, /Zip64 end record lies outside the archive/],
  ['the locator points at no Zip64 end record', { locatorOffset: 0n }, /Zip64 locator points at no Zip64 end record/],
  ['the Zip64 end record size disagrees with its position', { recordSize: 100n }, /Zip64 end record size disagrees/],
  ['the two end records disagree on the entry count', { count16: 1 }, /entry counts of the end records disagree/],
  ['an entry count past 2^53', { count: 1n << 62n }, /64-bit size or offset is out of range/],
  ['an entry count that cannot fit the central directory', { count: 1n << 40n }, /entries cannot fit/],
  ['the central directory offset lies past the end of the file', { cdOffset: 1n << 40n }, /does not end where the end record starts/],
  ['the central directory size is larger than the file', { cdSize: 1n << 33n }, /does not end where the end record starts/],
  ['a Zip64 extra size larger than the data inflates to', { extraSize: BigInt(ENTRIES[0]!.data.length + 1) }, /sizes disagree: declared 1201 bytes, data holds 1200/],
  ['a Zip64 extra size smaller than the data inflates to', { extraSize: 10n }, /ratio|sizes disagree|more than/],
  ['a Zip64 extra compressed size that runs into the next entry', { extraCompressedSize: 5000n }, /overlap/],
  ['a Zip64 extra local offset past the end of the file', { extraOffset: 1n << 40n }, /runs into the central directory|overlap/],
  ['a Zip64 extra value past 2^53', { extraSize: 1n << 63n }, /64-bit size or offset is out of range/],
  ['a Zip64 extra field too short for the fields it must hold', { shortExtra: true }, /Zip64 extra field is too short/],
  ['0xFFFFFFFF sizes and offset without a Zip64 extra field', { noExtra: true }, /overlap|runs into|ratio/],
];

for (const [what, damage, message] of cases) {
  test(`refused with exit 6, nothing written: ${what}`, () => {
    const dir = scratchDir('tc-zip64');
    const zip = join(dir, 'bad.zip');
    fs.writeFileSync(zip, zip64(damage));
    const store = join(dir, 'store');
    const out = join(dir, 'out');
    for (const args of [['unpack', zip, out], ['unpack', zip, out, '--jobs', '2'], ['import', zip, '--ref', 'never']]) {
      const r = tc(args, store);
      assert.equal(r.status, 6, `${args[0]}: ${r.stderr}`);
      const body = JSON.parse(r.stdout) as { ok: boolean; error: { code: string; message: string } };
      assert.equal(body.ok, false);
      assert.match(body.error.code, /^ERR_TREECAST_(ARCHIVE|UNSAFE_PATH)$/);
      assert.match(body.error.message, message, args[0]);
      assert.doesNotMatch(r.stderr, /internal error|\n\s+at /);
    }
    assert.equal(fs.existsSync(out), false, 'unpack wrote nothing');
    assert.equal(fs.existsSync(join(store, 'refs', 'never')), false, 'import recorded nothing');
  });
}
