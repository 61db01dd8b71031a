/**
 * SIGTERM or SIGINT early in any command (while the CLI loads, before a command takes signals for
 * itself) ends it with the documented interrupted exit code, 130, writing nothing, not by the
 * signal's default action (143 for SIGTERM).
 *
 * Node runs no JavaScript for its first tens of milliseconds (its own start-up: 50-200 ms on this
 * loaded machine); a signal then still has the default action, and nothing in treecast can change
 * that. So these tests signal the CLI from the moment its own code runs: a preload module (node
 * --require, which runs before bin/treecast) either sends the signal to its own process at set
 * points (the first turn of the event loop, after 0, 10 and 50 ms), or, watching
 * `process.on`, tells this test through a pipe when bin/treecast took the signal, and the test
 * signals it from outside at once and after short delays.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { tempDir } from './helpers/tmp.js';
import { BIN } from './helpers/remote.js';

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function preloads(): { self: string; watch: string } {
  const dir = tempDir('tc-early-signal');
  const self = join(dir, 'self.cjs');
  fs.writeFileSync(
    self,
    `const sig = process.env.EARLY_SIGNAL, at = process.env.EARLY_AT;
const send = () => process.kill(process.pid, sig);
if (at === 'immediate') setImmediate(send); else setTimeout(send, Number(at));
`,
  );
  const watch = join(dir, 'watch.cjs');
  // Tells fd 3 once a listener for the signal is added (bin/treecast's, at its first lines).
  fs.writeFileSync(
    watch,
    `const fs = require('node:fs');
const on = process.on;
let told = false;
process.on = function (name, fn) {
  const r = on.call(this, name, fn);
  if (name === process.env.EARLY_SIGNAL && !told) { told = true; fs.writeSync(3, 'x'); }
  return r;
};
`,
  );
  return { self, watch };
}

/** Runs the CLI with a preload; `onReady` is called when the preload writes to fd 3. */
function run(preload: string, args: string[], env: Record<string, string>, onReady?: (kill: (s: NodeJS.Signals) => void) => void): Promise<Exit> {
  const child = spawn(process.execPath, ['--require', preload, BIN, ...args], {
    env: { ...process.env, ...env, TREECAST_STORE: join(tempDir('tc-early-store'), 's') },
    // stdin a pipe held open: `blob put -` waits on it for as long as the test wants.
    stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c) => (stdout += c));
  child.stderr!.on('data', (c) => (stderr += c));
  const ready = child.stdio[3] as NodeJS.ReadableStream;
  ready.on('data', () => onReady?.((s) => child.kill(s)));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

// `blob put -` waits on stdin, so the command is still running, not printing, when the signal comes
// (a command that ends at once, as `ls` with no store does, is done before the first loop turn).
const ARGS = ['blob', 'put', '-'];

test('a SIGTERM or SIGINT the CLI sends itself as it starts exits 130 with nothing written', async () => {
  const { self } = preloads();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    for (const at of ['immediate', '0', '10', '50']) {
      for (let round = 0; round < 3; round++) {
        const r = await run(self, ARGS, { EARLY_SIGNAL: sig, EARLY_AT: at });
        const what = `${sig} at ${at} (round ${round})`;
        assert.deepEqual([r.code, r.signal], [130, null], `${what}: ${r.stderr}`);
        assert.equal(r.stdout + r.stderr, '', `${what} wrote nothing`);
      }
    }
  }
});

test('a SIGTERM or SIGINT from outside, as soon as the CLI runs and after short delays, exits 130 with nothing written', async () => {
  const { watch } = preloads();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    for (const delay of [0, 5, 20, 100]) {
      for (let round = 0; round < 3; round++) {
        let sent = false;
        const r = await run(watch, ARGS, { EARLY_SIGNAL: sig }, (kill) => {
          sent = true;
          if (delay === 0) kill(sig);
          else setTimeout(() => kill(sig), delay);
        });
        const what = `${sig} ${delay} ms after the CLI started (round ${round})`;
        assert.ok(sent, `${what}: the CLI took the signal (${r.code} ${r.signal} ${r.stderr})`);
        assert.deepEqual([r.code, r.signal], [130, null], `${what}: ${r.stderr}`);
        assert.equal(r.stdout + r.stderr, '', `${what} wrote nothing`);
      }
    }
  }
});
