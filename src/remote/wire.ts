/**
 * The wire format of treecast's batch endpoints (docs/remote-protocol.md). Pure: no I/O, so every
 * edge (a frame split across any chunk boundary, a truncated stream, a bad record) is unit-tested.
 *
 * Two shapes, both binary and fixed-width where possible so neither side parses text per blob:
 *
 *   digest record  = 32 bytes raw SHA-256 + 8 bytes size (unsigned big-endian)          (40 bytes)
 *   digest list    = digest record*                   (body of /missing requests and responses)
 *   frame          = digest record + 1 status byte + (status 0: exactly `size` bytes of blob)
 *   frame stream   = frame*                           (/read and /tree responses, /write requests)
 *
 * Frames carry their digest so a reader verifies each blob as it streams past, and a stream cut
 * anywhere loses only the frame being read.
 */
import { type Digest, formatDigest } from '../core/digest.js';
import { RemoteError } from '../errors.js';

/**
 * Sent by treecast's client with GET /ac/<key> for a ref: a treecast server validating its action
 * cache then answers an entry it holds even when a blob the entry reaches is missing, naming that
 * blob (`<hash>/<size>`) in AC_MISSING_HEADER, so the client reports the missing blob rather than
 * a name with no entry. Without it (Bazel, ccache) such an entry is a miss, 404 (server-ac.ts).
 */
export const AC_UNCHECKED_HEADER = 'x-treecast-ac-unchecked';
export const AC_MISSING_HEADER = 'x-treecast-ac-missing';
/** The header a read-only server's 405 refusals of writes carry, so a client can say why. */
export const READ_ONLY_HEADER = 'x-treecast-read-only';
/** Value of `protocol` in GET /status from a server that offers the batch endpoints. */
export const BATCH_PROTOCOL = 'treecast-batch/1';
/** Path of the batch endpoints below the (optional) instance prefix. */
export const BATCH_PREFIX = 'treecast/v1/';

export const RECORD_BYTES = 40;
export const FRAME_HEADER_BYTES = 41;
export const FRAME_PRESENT = 0;
export const FRAME_MISSING = 1;

export function writeRecord(d: Digest, out: Buffer, at: number): void {
  out.write(d.hash, at, 32, 'hex');
  out.writeBigUInt64BE(BigInt(d.size), at + 32);
}

export function readRecord(buf: Uint8Array, at: number): Digest {
  const b = Buffer.from(buf.buffer, buf.byteOffset + at, RECORD_BYTES);
  const hi = b.readUInt32BE(32);
  const lo = b.readUInt32BE(36);
  // Sizes past 2^53 cannot be a real blob; refuse rather than round.
  if (hi >= 0x200000) throw new WireError(`digest record with size out of range at byte ${at}`);
  return { hash: b.toString('hex', 0, 32), size: hi * 0x1_0000_0000 + lo };
}

export function encodeDigestList(digests: readonly Digest[]): Buffer {
  const out = Buffer.allocUnsafe(digests.length * RECORD_BYTES);
  for (let i = 0; i < digests.length; i++) writeRecord(digests[i]!, out, i * RECORD_BYTES);
  return out;
}

export function decodeDigestList(buf: Uint8Array): Digest[] {
  if (buf.length % RECORD_BYTES !== 0) throw new WireError(`digest list of ${buf.length} bytes is not a multiple of ${RECORD_BYTES}`);
  const out: Digest[] = new Array(buf.length / RECORD_BYTES);
  for (let i = 0; i < out.length; i++) out[i] = readRecord(buf, i * RECORD_BYTES);
  return out;
}

export function encodeFrameHeader(d: Digest, status: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  writeRecord(d, out, 0);
  out[RECORD_BYTES] = status;
  return out;
}

/** A whole frame (header and data) in one buffer; for small blobs and tests. */
export function encodeFrame(d: Digest, data?: Uint8Array): Buffer {
  if (!data) return encodeFrameHeader(d, FRAME_MISSING);
  if (data.length !== d.size) throw new WireError(`frame data of ${data.length} bytes for ${formatDigest(d)}`);
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + data.length);
  writeRecord(d, out, 0);
  out[RECORD_BYTES] = FRAME_PRESENT;
  out.set(data, FRAME_HEADER_BYTES);
  return out;
}

/** A malformed batch body; the server answers 400, the client reports the server. */
export class WireError extends RemoteError {
  override readonly code = 'ERR_TREECAST_REMOTE_PROTOCOL';
}

export interface FrameSink {
  /** A frame starts. `present` false: the peer lacks the blob (no data follows). */
  header(d: Digest, present: boolean): void;
  /** Part of the current frame's data, in order. The chunk is only valid during the call. */
  data(chunk: Buffer): void;
  /** The current frame's data is complete (called for missing frames too). */
  end(d: Digest): void;
}

/**
 * Incremental frame-stream parser: feed chunks as they arrive, split anywhere. Data is passed
 * through as subarrays of the input (no copy), so memory stays bounded by the chunk size.
 */
export class FrameDecoder {
  private readonly head = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  private headLen = 0;
  private current: Digest | undefined;
  private remaining = 0;
  frames = 0;

  constructor(
    private readonly sink: FrameSink,
    private readonly limits: { maxBlobBytes?: number } = {},
  ) {}

  push(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      if (this.current) {
        const n = Math.min(this.remaining, chunk.length - pos);
        this.sink.data(chunk.subarray(pos, pos + n));
        pos += n;
        this.remaining -= n;
        if (this.remaining === 0) this.finishFrame();
        continue;
      }
      const n = Math.min(FRAME_HEADER_BYTES - this.headLen, chunk.length - pos);
      chunk.copy(this.head, this.headLen, pos, pos + n);
      this.headLen += n;
      pos += n;
      if (this.headLen < FRAME_HEADER_BYTES) break;
      this.headLen = 0;
      const d = readRecord(this.head, 0);
      const status = this.head[RECORD_BYTES];
      if (status !== FRAME_PRESENT && status !== FRAME_MISSING) throw new WireError(`frame ${this.frames} has unknown status ${status}`);
      if (status === FRAME_PRESENT && this.limits.maxBlobBytes !== undefined && d.size > this.limits.maxBlobBytes) {
        throw new WireError(`frame for ${formatDigest(d)} is larger than the limit of ${this.limits.maxBlobBytes} bytes`, { status: 413 });
      }
      this.current = d;
      this.sink.header(d, status === FRAME_PRESENT);
      this.remaining = status === FRAME_PRESENT ? d.size : 0;
      if (this.remaining === 0) this.finishFrame();
    }
  }

  /** The stream ended; throws when it ended inside a frame. */
  finish(): void {
    if (this.current || this.headLen > 0) {
      const what = this.current ? `blob ${formatDigest(this.current)} (${this.remaining} bytes short)` : 'a frame header';
      throw new WireError(`frame stream truncated inside ${what}`, { digest: this.current ? formatDigest(this.current) : undefined });
    }
  }

  /** True between frames (a cut here lost nothing). */
  get atBoundary(): boolean {
    return !this.current && this.headLen === 0;
  }

  private finishFrame(): void {
    const d = this.current!;
    this.current = undefined;
    this.frames++;
    this.sink.end(d);
  }
}
