/**
 * Ctrl-C pressed twice (or SIGTERM sent twice) during a checkout: the second signal must not cut
 * short the orderly stop the first one started. The command ends as after one signal: exit 130
 * (SIGTERM too, not 143, the default action's code), the interrupted error printed, no file half
 * written, a record that `status` names as unfinished, and the same command finishes the tree.
 *
 * The checkout is a real child process, held half way by TREECAST_TEST_PAUSE_FILE (before its
 * second batch of writes) and, with TREECAST_TEST_HOLD_STOP, held there after the first signal
 * too, so the second one provably arrives while the stop it started is under way (two signals
 * sent back to back would be one: the kernel merges a signal still pending).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { describeTree, tempDir, writeTree, type Spec } from './helpers/tmp.js';
import { runCli, startCli, waitExit } from './helpers/remote.js';

type Child = ReturnType<typeof startCli>;
const children: Child[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  test(`${sig} twice during a checkout ends it as one does: exit 130, nothing half written, finished by the same command`, async () => {
    const dir = tempDir('tc-double-signal');
    const store = join(dir, 's');
    const spec: Spec = {};
    for (let i = 0; i < 700; i++) spec[`d${i % 5}/f${String(i).padStart(3, '0')}.txt`] = `file ${i}\n`.repeat(1 + (i % 300));
    const src = join(dir, 'src');
    writeTree(src, spec);
    assert.equal((await runCli(['snapshot', src, '--store', store, '--ref', 'tree'])).code, 0);

    const out = join(dir, 'out');
    const pause = join(dir, 'pause');
    const args = ['checkout', 'tree', out, '--store', store, '--method', 'copy', '--jobs', '2'];
    const first = startCli(args, { TREECAST_TEST_PAUSE_FILE: pause, TREECAST_TEST_HOLD_STOP: '1' });
    children.push(first);
    const exited = waitExit(first);
    const deadline = Date.now() + 60_000;
    const until = async (done: () => boolean, what: string) => {
      while (!done() && first.exitCode === null && first.signalCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.ok(done(), `${what} (${first.out.stderr}, exit ${first.exitCode ?? first.signalCode})`);
    };
    await until(() => fs.existsSync(pause), 'the checkout paused half way');
    first.kill(sig);
    await until(() => first.out.stderr.includes(`${sig} received, stopping`), 'the first signal started the stop');
    first.kill(sig);
    await until(() => first.out.stderr.includes(`${sig} received again`), 'the second signal was acknowledged while the stop is held');
    fs.rmSync(pause);
    const r = await exited;
    assert.equal(r.signal, null, `not ended by ${sig}'s default action`);
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /ERR_TREECAST_INTERRUPTED/, 'the orderly stop reported the interruption');
    assert.match(r.stderr, /received again; already stopping/, r.stderr);

    // Every file there is whole: each holds exactly its source's bytes.
    let written = 0;
    for (const rel of fs.readdirSync(out, { recursive: true }) as string[]) {
      const p = join(out, rel);
      if (!fs.lstatSync(p).isFile()) continue;
      assert.deepEqual(fs.readFileSync(p), fs.readFileSync(join(src, rel)), `${rel} is whole`);
      written++;
    }
    assert.ok(written > 0 && written < 700, `stopped half way (${written} files written)`);
    const st = await runCli(['status', out, '--store', store]);
    assert.equal(st.code, 7, st.stderr);
    assert.match(st.stderr, /did not finish/);

    const again = await runCli(args);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(describeTree(out), describeTree(src));
  });
}
