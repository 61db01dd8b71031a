/**
 * A push parser for tar streams (no I/O): decompressed chunks go in, whole entries come out through
 * a sink, with pax ('x') and GNU long name / long link ('L', 'K') records merged into the entry they
 * describe. Everything it reports is checked: header checksums, numeric fields, UTF-8 names, pax
 * record syntax, metadata records of bounded size, data that runs past the end (truncation).
 */
import { ArchiveError, UnsafePathError } from '../errors.js';
import { MAX_ENTRY_NAME_BYTES } from './entry-rules.js';
import { BLOCK, T, isZeroBlock, newWordView, padding, paxInteger, parseHeader, parsePax, paxTime, type RawHeader } from './tar-format.js';

/** An entry as the archive describes it, names decoded, before any judgement. */
export interface TarHeader extends Omit<RawHeader, 'name' | 'linkname'> {
  /** The stored name (after pax/GNU records), exactly as stored. */
  name: string;
  linkname: string;
  /** A pax GNU.sparse.* record made it a sparse file (extracted as a special: skipped or refused). */
  sparse: boolean;
  /** Offset of the header in the decompressed stream (for messages). */
  offset: number;
}

export interface TarSink {
  /** An entry begins; return true to receive its data (then `data` is called until `size` bytes passed). */
  entry(h: TarHeader): boolean;
  /**
   * A piece of the current entry's data: `chunk[start, end)`, valid only during the call. Perf:
   * offsets rather than a subarray view per piece, one object less per file.
   */
  data(chunk: Buffer, start: number, end: number): void;
}

/** Largest pax extended header accepted: real ones are a few hundred bytes. */
export const MAX_PAX_BYTES = 1 << 20;
/** Largest GNU long name / long link record: a name longer than any path allows is refused. */
const MAX_LONG_NAME = MAX_ENTRY_NAME_BYTES + 1;

const utf8 = new TextDecoder('utf-8', { fatal: true });

type State =
  | { kind: 'header' }
  | { kind: 'data'; left: number; pad: number; want: boolean }
  | { kind: 'meta'; type: number; buf: Buffer; got: number; pad: number; at: number }
  | { kind: 'end' };

export class TarParser {
  /** Bytes consumed so far. */
  offset = 0;
  entries = 0;
  private state: State = { kind: 'header' };
  private readonly partial = Buffer.alloc(BLOCK);
  private partialLen = 0;
  private pax: Map<string, Buffer> | undefined;
  private longName: Buffer | undefined;
  private longLink: Buffer | undefined;
  private current: TarHeader | undefined;
  private readonly words = newWordView();

  constructor(
    private readonly sink: TarSink,
    private readonly label: string,
  ) {}

  /** True once the end-of-archive marker was read (later bytes are ignored). */
  get ended(): boolean {
    return this.state.kind === 'end';
  }

  /** Parses `chunk[from, to)`, the next bytes of the stream. */
  push(chunk: Buffer, from = 0, to = chunk.length): void {
    let i = from;
    const n = to;
    while (i < n && this.state.kind !== 'end') {
      const st = this.state;
      if (st.kind === 'header') {
        if (this.partialLen > 0 || n - i < BLOCK) {
          const take = Math.min(BLOCK - this.partialLen, n - i);
          chunk.copy(this.partial, this.partialLen, i, i + take);
          this.partialLen += take;
          i += take;
          this.offset += take;
          if (this.partialLen < BLOCK) return;
          this.partialLen = 0;
          this.header(this.partial, 0, this.offset - BLOCK);
        } else {
          this.offset += BLOCK;
          this.header(chunk, i, this.offset - BLOCK);
          i += BLOCK;
        }
      } else if (st.kind === 'data') {
        if (st.left > 0) {
          const take = Math.min(st.left, n - i);
          if (st.want) this.sink.data(chunk, i, i + take);
          st.left -= take;
          i += take;
          this.offset += take;
        }
        if (st.left === 0) {
          const skip = Math.min(st.pad, n - i);
          st.pad -= skip;
          i += skip;
          this.offset += skip;
          if (st.pad === 0) this.state = { kind: 'header' };
        }
      } else if (st.kind === 'meta') {
        const take = Math.min(st.buf.length - st.got, n - i);
        chunk.copy(st.buf, st.got, i, i + take);
        st.got += take;
        i += take;
        this.offset += take;
        if (st.got === st.buf.length) {
          const skip = Math.min(st.pad, n - i);
          st.pad -= skip;
          i += skip;
          this.offset += skip;
          if (st.pad === 0) {
            this.state = { kind: 'header' };
            this.meta(st.type, st.buf, st.at);
          }
        }
      }
    }
  }

  /** The input ended: anything but a complete archive is refused as truncated. */
  end(): void {
    const st = this.state;
    if (st.kind === 'end') return;
    if (st.kind === 'data' || st.kind === 'meta') {
      const what = this.current ? `entry '${this.current.name}'` : 'an extended header';
      throw new ArchiveError(`${this.label}: archive is truncated: ${what} ends early at offset ${this.offset}`, { path: this.current?.name ?? this.label });
    }
    if (this.offset === 0) throw new ArchiveError(`${this.label}: archive is empty`, { path: this.label });
    throw new ArchiveError(`${this.label}: archive is truncated: no end-of-archive marker after ${this.entries} entries (offset ${this.offset})`, { path: this.label });
  }

  private header(b: Buffer, off: number, at: number): void {
    if (isZeroBlock(b, off)) {
      if (this.pax || this.longName || this.longLink) throw new ArchiveError(`${this.label}: an extended header at offset ${at} describes no entry`, { path: this.label });
      this.state = { kind: 'end' };
      return;
    }
    const r = parseHeader(b, off, this.words);
    if (!r.ok) throw new ArchiveError(`${this.label}: header at offset ${at}: ${r.why}`, { path: this.label });
    const h = r.header;
    if (h.typeflag === T.PAX || h.typeflag === T.PAX_GLOBAL || h.typeflag === T.GNU_LONGNAME || h.typeflag === T.GNU_LONGLINK) {
      const limit = h.typeflag === T.PAX || h.typeflag === T.PAX_GLOBAL ? MAX_PAX_BYTES : MAX_LONG_NAME;
      if (h.size > limit) {
        const what = h.typeflag === T.GNU_LONGNAME ? 'GNU long name' : h.typeflag === T.GNU_LONGLINK ? 'GNU long link name' : 'pax extended header';
        throw new UnsafePathError(`${this.label}: ${what} at offset ${at} is ${h.size} bytes, more than the ${limit} bytes any entry needs`, { path: this.label });
      }
      this.state = { kind: 'meta', type: h.typeflag, buf: Buffer.alloc(h.size), got: 0, pad: padding(h.size), at };
      if (h.size === 0) {
        this.state = { kind: 'header' };
        this.meta(h.typeflag, Buffer.alloc(0), at);
      }
      return;
    }
    this.entry(h, at);
  }

  private meta(type: number, buf: Buffer, at: number): void {
    if (type === T.PAX_GLOBAL) return; // comments (git archive) and defaults: nothing treecast uses
    if (type === T.PAX) {
      const recs = parsePax(buf);
      if (typeof recs === 'string') throw new ArchiveError(`${this.label}: pax extended header at offset ${at}: ${recs}`, { path: this.label });
      this.pax = recs;
      return;
    }
    const end = buf.indexOf(0);
    const name = end < 0 ? buf : buf.subarray(0, end);
    if (type === T.GNU_LONGNAME) this.longName = Buffer.from(name);
    else this.longLink = Buffer.from(name);
  }

  private decode(bytes: Buffer | string, what: string): string {
    if (typeof bytes === 'string') return bytes; // ASCII, read as such by parseHeader
    try {
      return utf8.decode(bytes);
    } catch {
      throw new UnsafePathError(`${this.label}: ${what} '${bytes.toString('latin1').slice(0, 200)}' is not valid UTF-8`, {
        path: this.label,
        hint: 'treecast reads names as UTF-8 only, so that every name means one path',
      });
    }
  }

  private entry(h: RawHeader, at: number): void {
    const pax = this.pax;
    let nameBytes: Buffer | string = this.longName ?? h.name;
    let linkBytes: Buffer | string = this.longLink ?? h.linkname;
    let size = h.size;
    let mtime = h.mtime;
    let uid = h.uid;
    let gid = h.gid;
    let sparse = h.typeflag === T.GNU_SPARSE;
    if (pax) {
      const p = pax.get('path');
      if (p) nameBytes = p;
      const l = pax.get('linkpath');
      if (l) linkBytes = l;
      const s = pax.get('size');
      if (s) size = paxInteger(s);
      const m = pax.get('mtime');
      if (m) mtime = paxTime(m);
      const u = pax.get('uid');
      if (u) uid = paxInteger(u);
      const g = pax.get('gid');
      if (g) gid = paxInteger(g);
      for (const k of pax.keys()) if (k.startsWith('GNU.sparse.')) sparse = true;
    }
    this.pax = this.longName = this.longLink = undefined;
    const name = this.decode(nameBytes, 'entry name');
    if (!Number.isSafeInteger(size) || size < 0) throw new ArchiveError(`${this.label}: entry '${name}': size is not a valid number`, { path: name });
    if (!Number.isFinite(mtime)) mtime = 0;
    const header: TarHeader = {
      name,
      linkname: linkBytes.length > 0 ? this.decode(linkBytes, `link name of '${name}'`) : '',
      typeflag: h.typeflag,
      mode: h.mode,
      uid: Number.isSafeInteger(uid) ? uid : 0,
      gid: Number.isSafeInteger(gid) ? gid : 0,
      size,
      mtime,
      sparse,
      offset: at,
    };
    this.current = header;
    this.entries++;
    // Hardlinks, symlinks and directories carry no data in the archives tar writers make, but a
    // stated size is still skipped so the stream stays in step.
    const want = this.sink.entry(header);
    this.state = { kind: 'data', left: size, pad: padding(size), want };
    if (size === 0) this.state = { kind: 'header' };
  }
}
