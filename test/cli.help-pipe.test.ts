/**
 * Help and the version into a reader that went away (`treecast --help | head -1`) end quietly with
 * exit 0, for the top-level help, a command's, `help COMMAND` and `--version` alike; a command's
 * own output into a closed pipe still exits 141 (cli.pipe.test.ts). A real pipe: this process's
 * end of the child's stdout is destroyed before the child writes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { BIN } from './helpers/remote.js';

function closedStdout(args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.destroy();
  let stderr = '';
  child.stderr.on('data', (c) => (stderr += c));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stderr }));
  });
}

test('--help, COMMAND --help, help COMMAND and --version into a closed pipe exit 0 with nothing on stderr', async () => {
  const cases = [['--help'], ['-h'], ['help'], ['checkout', '--help'], ['help', 'checkout'], ['refs', '--help'], ['--version'], ['-V'], ['--version', '--json']];
  for (const args of cases) {
    for (let round = 0; round < 3; round++) {
      const r = await closedStdout(args);
      assert.deepEqual([r.code, r.signal], [0, null], `treecast ${args.join(' ')} (round ${round}): ${r.stderr}`);
      assert.equal(r.stderr, '', `treecast ${args.join(' ')} (round ${round})`);
    }
  }
});
