// node-tar, the peer tar implementation: node archive-node-tar.mjs c DIR OUT.tar | x IN.tar DIR
// ('-' for OUT or IN: stdout or stdin).
import * as tar from 'tar';
import { pipeline } from 'node:stream/promises';

const [mode, a, b] = process.argv.slice(2);
if (mode === 'c') {
  if (b === '-') await pipeline(tar.c({ cwd: a }, ['.']), process.stdout);
  else await tar.c({ cwd: a, file: b }, ['.']);
} else if (a === '-') await pipeline(process.stdin, tar.x({ cwd: b }));
else await tar.x({ file: a, cwd: b });
