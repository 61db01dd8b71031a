/**
 * Keeps V8's young generation at the size it has now for the rest of the process, for a command
 * whose memory is mostly buffers that only a scavenge frees: a plain cache's checkout, one GET per
 * blob, where each socket read is a Buffer of its own and each response leaves undici's header
 * buffers behind.
 *
 * V8 starts the young generation small and doubles it (`--semi-space-growth-factor`, 2) while
 * many objects survive a scavenge, up to 16 MB per semi-space (34 MB of new space in the peak
 * RSS of `checkout --remote` from nginx). The largest size is fixed when the isolate starts
 * (`--max-semi-space-size` must be given to node on its command line, and an ESM-free launcher
 * cannot pass it without a second process), but the growth factor is read at each growth, so
 * setting it to 1 at run time stops the growing. A smaller young generation is scavenged sooner,
 * and the native memory of the buffers it held (socket reads, copies of the body) goes back sooner.
 *
 * Perf: in the CLI the young generation has grown to 8 MB (4 MB semi-spaces) by the time the
 * fetcher learns the server is a plain cache, and is held there. Peak RSS, Linux tree from nginx
 * into tmpfs, runs interleaved with the build before at load average 7-20 (CPU is user + sys):
 * `checkout DIGEST --remote` 277, 298, 293, 293, 301 MB before (CPU 9.2-12.5 s), 262, 268, 227,
 * 235, 242 MB after (CPU 9.7-11.3 s); `checkout NAME --remote` 282, 283, 339, 281 MB before (CPU
 * 9.1-11.6 s), 263, 282, 270, 254, 259 MB after (CPU 9.2-11.0 s). With the writer threads' young
 * generation capped too (materialize/checkout.ts), 3 more interleaved pairs against the build
 * before, at load 13-16: DIGEST 236, 284, 252 MB against 278, 242, 274 MB (CPU 9.3-10.7 s against
 * 9.3-10.4 s); NAME 238, 255, 245 MB against 296, 269, 298 MB (CPU 9.8-11.6 s against 9.5-11.9 s).
 *
 * Process-wide: the CLI asks for it (RemoteFetcher's `holdYoungGeneration` option); a library
 * caller's process is left alone unless it asks too.
 */
import * as v8 from 'node:v8';

let held = false;

export function holdYoungGeneration(): void {
  if (held) return;
  held = true;
  v8.setFlagsFromString('--semi-space-growth-factor=1');
}
