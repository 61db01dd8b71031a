// Packs a directory with yazl (the peer zip writer of the Node ecosystem): node archive-yazl-pack.mjs DIR OUT.zip
import * as fs from 'node:fs';
import yazl from 'yazl';

const [dir, out] = process.argv.slice(2);
const zip = new yazl.ZipFile();
const walk = (abs, rel) => {
  for (const d of fs.readdirSync(abs, { withFileTypes: true })) {
    const p = `${abs}/${d.name}`;
    const name = rel + d.name;
    const st = fs.lstatSync(p);
    if (d.isDirectory()) {
      zip.addEmptyDirectory(name, { mtime: st.mtime, mode: st.mode });
      walk(p, `${name}/`);
    } else if (d.isSymbolicLink()) {
      zip.addBuffer(Buffer.from(fs.readlinkSync(p)), name, { mtime: st.mtime, mode: st.mode, compress: false });
    } else if (d.isFile()) {
      zip.addFile(p, name, { mtime: st.mtime, mode: st.mode });
    }
  }
};
walk(dir, '');
zip.end();
zip.outputStream.pipe(fs.createWriteStream(out)).on('close', () => {});
