/**
 * Builds tar bytes by hand for tests, including hostile ones: any name, type, link name, mode and
 * size; pax records and GNU long name / long link records before an entry; a wrong checksum; data
 * shorter than the header says; no end-of-archive marker. Deliberately independent of src/archive.
 */

export interface TarCraftEntry {
  name: string;
  /** Type flag character: '0' file (default), '1' hardlink, '2' symlink, '5' dir, '6' FIFO, ... */
  type?: string;
  data?: Buffer | string;
  linkname?: string;
  mode?: number;
  mtime?: number;
  uid?: number;
  gid?: number;
  /** The size written in the header (default: the data's length). */
  size?: number;
  /** Raw bytes for the size field (e.g. GNU base-256). */
  sizeField?: Buffer;
  /** pax records ('x' header) placed before the entry. */
  pax?: Record<string, string>;
  /** Size stated by the pax header itself (default: its records' length). */
  paxSize?: number;
  /** A GNU 'L' record holding this long name before the entry. */
  gnuLongName?: string | Buffer;
  /** A GNU 'K' record holding this long link name before the entry. */
  gnuLongLink?: string;
  /** Adds this to the stored checksum (a corrupt header). */
  checksumDelta?: number;
}

function octal(v: number, len: number): string {
  return v.toString(8).padStart(len - 1, '0') + '\0';
}

export function tarHeader(f: { name: Buffer; type: string; size: number; mode: number; mtime: number; linkname: Buffer; uid: number; gid: number; sizeField?: Buffer; checksumDelta?: number }): Buffer {
  const b = Buffer.alloc(512);
  f.name.copy(b, 0, 0, Math.min(100, f.name.length));
  b.write(octal(f.mode, 8), 100, 'latin1');
  b.write(octal(f.uid, 8), 108, 'latin1');
  b.write(octal(f.gid, 8), 116, 'latin1');
  if (f.sizeField) f.sizeField.copy(b, 124, 0, 12);
  else b.write(octal(f.size, 12), 124, 'latin1');
  b.write(octal(f.mtime, 12), 136, 'latin1');
  b.write(f.type, 156, 'latin1');
  f.linkname.copy(b, 157, 0, Math.min(100, f.linkname.length));
  b.write('ustar\u000000', 257, 'latin1');
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of b) sum += c;
  b.write(octal(sum + (f.checksumDelta ?? 0), 7) + ' ', 148, 'latin1');
  return b;
}

function pad(n: number): Buffer {
  return Buffer.alloc((512 - (n % 512)) % 512);
}

function paxData(records: Record<string, string>): Buffer {
  let out = '';
  for (const [k, v] of Object.entries(records)) {
    const body = ` ${k}=${v}\n`;
    let len = Buffer.byteLength(body) + 1;
    while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
    out += `${len}${body}`;
  }
  return Buffer.from(out);
}

/** The bytes of one entry (with its pax / GNU records), data padded to whole blocks. */
export function tarEntry(e: TarCraftEntry): Buffer {
  const parts: Buffer[] = [];
  const meta = (type: string, data: Buffer, stated = data.length) => {
    parts.push(tarHeader({ name: Buffer.from('././@LongLink'), type, size: stated, mode: 0o644, mtime: 0, linkname: Buffer.alloc(0), uid: 0, gid: 0 }), data, pad(data.length));
  };
  if (e.pax) meta('x', paxData(e.pax), e.paxSize);
  if (e.gnuLongName !== undefined) meta('L', Buffer.concat([Buffer.from(e.gnuLongName), Buffer.from([0])]));
  if (e.gnuLongLink !== undefined) meta('K', Buffer.concat([Buffer.from(e.gnuLongLink), Buffer.from([0])]));
  const data = e.data === undefined ? Buffer.alloc(0) : Buffer.from(e.data);
  const type = e.type ?? '0';
  parts.push(
    tarHeader({
      name: Buffer.from(e.name),
      type,
      size: e.size ?? data.length,
      sizeField: e.sizeField,
      mode: e.mode ?? (type === '5' ? 0o755 : type === '2' ? 0o777 : 0o644),
      mtime: e.mtime ?? 1_600_000_000,
      linkname: Buffer.from(e.linkname ?? ''),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      checksumDelta: e.checksumDelta,
    }),
    data,
    pad(data.length),
  );
  return Buffer.concat(parts);
}

/** A whole archive: the entries and (unless `end: false`) the two zero blocks. */
export function craftTar(entries: TarCraftEntry[], opts: { end?: boolean } = {}): Buffer {
  return Buffer.concat([...entries.map(tarEntry), opts.end === false ? Buffer.alloc(0) : Buffer.alloc(1024)]);
}
