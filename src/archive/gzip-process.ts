/**
 * The compressor process pack runs for `.tar.gz` (see gzip-parallel.ts): reads the tar stream from
 * stdin, writes the gzip to stdout (the archive file, or pack's own stdout). Arguments: the level
 * and how many blocks may be in flight. An error is one line on stderr and exit code 1, as the
 * `gzip` and `zstd` programs report theirs.
 */
import { gzipStream } from './gzip-parallel.js';
import { writeAll } from './tar-writer.js';

const [level, inFlight] = process.argv.slice(2).map(Number);
gzipStream(process.stdin, (b) => writeAll(1, b, 'stdout'), level!, inFlight!).catch((e: Error) => {
  process.stderr.write(`${e.message}\n`);
  process.exitCode = 1;
});
