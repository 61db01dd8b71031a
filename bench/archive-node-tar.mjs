// node-tar, the peer tar implementation: node archive-node-tar.mjs c DIR OUT.tar | x IN.tar DIR
import * as tar from 'tar';

const [mode, a, b] = process.argv.slice(2);
if (mode === 'c') await tar.c({ cwd: a, file: b }, ['.']);
else await tar.x({ file: a, cwd: b });
