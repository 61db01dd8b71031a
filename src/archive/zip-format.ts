/**
 * Zip format constants and the small encoders/decoders shared by the reader and the writer
 * (APPNOTE.TXT 6.3; Info-ZIP's extra fields). Pure: no I/O.
 */

export const SIG_LOCAL = 0x04034b50;
export const SIG_CENTRAL = 0x02014b50;
export const SIG_EOCD = 0x06054b50;
export const SIG_ZIP64_EOCD = 0x06064b50;
export const SIG_ZIP64_LOCATOR = 0x07064b50;

export const LOCAL_HEADER_SIZE = 30;
export const CENTRAL_HEADER_SIZE = 46;
export const EOCD_SIZE = 22;
export const ZIP64_EOCD_SIZE = 56;
export const ZIP64_LOCATOR_SIZE = 20;

export const METHOD_STORE = 0;
export const METHOD_DEFLATE = 8;

export const FLAG_ENCRYPTED = 0x1;
export const FLAG_DATA_DESCRIPTOR = 0x8;
export const FLAG_STRONG_ENCRYPTION = 0x40;
export const FLAG_UTF8 = 0x800;

export const EXTRA_ZIP64 = 0x0001;
/** Info-ZIP extended timestamp ("UT"): flags byte, then mtime (and in local headers atime/ctime). */
export const EXTRA_TIMESTAMP = 0x5455;

/** "Version made by" high byte for Unix: external attributes then hold st_mode in their top 16 bits. */
export const HOST_UNIX = 3;
/** Version 3.0 made by, 2.0 needed (deflate); 4.5 needed when Zip64 fields are present. */
export const VERSION_MADE_BY = (HOST_UNIX << 8) | 30;
export const VERSION_NEEDED = 20;
export const VERSION_NEEDED_ZIP64 = 45;

export const U32_MAX = 0xffffffff;
export const U16_MAX = 0xffff;

export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;
/** MS-DOS directory attribute, set by Windows tools in the low byte of external attributes. */
export const DOS_DIR_ATTR = 0x10;

/** DOS date/time fields (local time, 2-second resolution, 1980..2107) of unix seconds. */
export function toDosDateTime(unixSeconds: number): { date: number; time: number } {
  let d = new Date(unixSeconds * 1000);
  if (d.getFullYear() < 1980) d = new Date(1980, 0, 1, 0, 0, 0);
  if (d.getFullYear() > 2107) d = new Date(2107, 11, 31, 23, 59, 58);
  const date = ((d.getFullYear() - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate();
  const time = (d.getHours() << 11) | (d.getMinutes() << 5) | (d.getSeconds() >> 1);
  return { date, time };
}

/** Unix seconds of DOS date/time fields, read as local time as Info-ZIP does. */
export function fromDosDateTime(date: number, time: number): number {
  const d = new Date(
    ((date >> 9) & 0x7f) + 1980,
    Math.max(0, ((date >> 5) & 0xf) - 1),
    Math.max(1, date & 0x1f),
    (time >> 11) & 0x1f,
    (time >> 5) & 0x3f,
    (time & 0x1f) * 2,
  );
  return Math.floor(d.getTime() / 1000);
}

/** Calls `fn(id, start, end)` for each extra-field record; returns false when the records are malformed. */
export function forEachExtra(buf: Buffer, start: number, end: number, fn: (id: number, s: number, e: number) => void): boolean {
  let p = start;
  while (p + 4 <= end) {
    const id = buf.readUInt16LE(p);
    const len = buf.readUInt16LE(p + 2);
    if (p + 4 + len > end) return false;
    fn(id, p + 4, p + 4 + len);
    p += 4 + len;
  }
  // Some writers pad the extra field with a few zero bytes; tolerate trailing bytes shorter than a header.
  return true;
}
