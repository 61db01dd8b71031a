import { Command } from 'commander';
import { formatDigest, parseDigest } from '../../core/digest.js';
import { addStoreOption, openExistingStore, openStore } from '../common.js';

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export function registerBlob(program: Command): void {
  const blob = program.command('blob').description('plumbing: put and get single blobs');

  const put = blob
    .command('put')
    .description('store a file (or - for standard input) and print its digest')
    .argument('<file>', 'file to store, or - for stdin');
  addStoreOption(put);
  put.action(async (file: string, o: { store?: string }) => {
    const store = openStore(o);
    const d = file === '-' ? store.putSync(await readStdin()) : store.ingestFileSync(file, undefined, true).digest;
    process.stdout.write(`${formatDigest(d)}\n`);
  });

  const get = blob
    .command('get')
    .description('write a blob to standard output, after checking its bytes against the digest')
    .argument('<digest>', 'blob digest <sha256>/<size>');
  addStoreOption(get);
  get.action(async (spec: string, o: { store?: string }) => {
    const store = openExistingStore(o);
    // readSync verifies before a single byte is written, so a corrupt blob yields no output.
    const bytes = store.readSync(parseDigest(spec));
    await new Promise<void>((resolve, reject) => {
      process.stdout.write(bytes, (err) => (err ? reject(err) : resolve()));
    });
  });
}
