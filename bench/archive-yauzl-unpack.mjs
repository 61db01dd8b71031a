// Unpacks a zip with yauzl (the peer zip reader of the Node ecosystem): node archive-yauzl-unpack.mjs IN.zip DIR
import * as fs from 'node:fs';
import { dirname } from 'node:path';
import { pipeline } from 'node:stream/promises';
import yauzl from 'yauzl';

const [zipPath, dir] = process.argv.slice(2);
const zip = await new Promise((res, rej) => yauzl.open(zipPath, { lazyEntries: true }, (e, z) => (e ? rej(e) : res(z))));
const made = new Set();
const mkdirp = (p) => {
  if (made.has(p)) return;
  fs.mkdirSync(p, { recursive: true });
  made.add(p);
};
const open = (entry) => new Promise((res, rej) => zip.openReadStream(entry, (e, s) => (e ? rej(e) : res(s))));
await new Promise((resolve, reject) => {
  zip.on('end', resolve);
  zip.on('error', reject);
  zip.on('entry', async (entry) => {
    try {
      const p = `${dir}/${entry.fileName}`;
      const mode = (entry.externalFileAttributes >>> 16) & 0xffff;
      if (entry.fileName.endsWith('/')) mkdirp(p);
      else {
        mkdirp(dirname(p));
        const stream = await open(entry);
        if ((mode & 0o170000) === 0o120000) {
          const chunks = [];
          for await (const c of stream) chunks.push(c);
          fs.symlinkSync(Buffer.concat(chunks).toString(), p);
        } else {
          await pipeline(stream, fs.createWriteStream(p, { mode: mode & 0o777 || 0o644 }));
          fs.utimesSync(p, entry.getLastModDate(), entry.getLastModDate());
        }
      }
      zip.readEntry();
    } catch (e) {
      reject(e);
    }
  });
  zip.readEntry();
});
zip.close();
