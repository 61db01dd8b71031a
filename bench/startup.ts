/**
 * Fixed cost: how long a command takes when it has (almost) nothing to do, against `node -e 0`.
 * Every command should start within 1.5x of a bare Node process plus its work; here the work is
 * a ten-file tree, so the ratio is the start-up overhead.
 */
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { type BenchContext, median, table, target, timeCases } from './harness.js';

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** Start-up is short and noisy: many more runs than the heavy sections. */
const MIN_RUNS = 20;

export async function run(ctx: BenchContext): Promise<string> {
  const { tmpfs, treecast: tc, log } = ctx;
  const runs = Math.max(ctx.runs, MIN_RUNS);
  const root = join(tmpfs, 'startup');
  const small = join(root, 'small');
  const store = join(root, 'store');
  const out = join(root, 'out');
  fs.mkdirSync(small, { recursive: true });
  for (let i = 0; i < 10; i++) fs.writeFileSync(join(small, `f${i}.txt`), `file ${i}\n`.repeat(i + 1));
  const env = `TREECAST_STORE=${q(store)}`;
  execFileSync('bash', ['-c', `${env} ${tc} snapshot ${q(small)} --ref small`], { stdio: 'ignore' });
  // An up-to-date checkout: updating it again is the fixed cost of every incremental checkout.
  const current = join(root, 'current');
  execFileSync('bash', ['-c', `${env} ${tc} checkout small ${q(current)}`], { stdio: 'ignore' });
  // The machine may be shared: the load average before and after says how much.
  const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');
  const loadBefore = load();

  log('start-up cases');
  const r = timeCases(
    [
      { label: 'node -e 0', cmd: 'node -e 0' },
      { label: 'treecast --version', cmd: `${tc} --version` },
      { label: 'treecast --help', cmd: `${tc} --help` },
      { label: 'treecast refs', cmd: `${env} ${tc} refs` },
      { label: 'treecast ls (10 files)', cmd: `${env} ${tc} ls small` },
      { label: 'treecast snapshot (10 files, unchanged)', cmd: `${env} ${tc} snapshot ${q(small)}` },
      { label: 'treecast checkout (10 files, empty target)', setup: `rm -rf ${q(out)}`, cmd: `${env} ${tc} checkout small ${q(out)}` },
      { label: 'treecast checkout (10 files, target up to date)', cmd: `${env} ${tc} checkout small ${q(current)}` },
    ],
    runs,
    log,
  );
  fs.rmSync(root, { recursive: true, force: true });
  const node = median(r.get('node -e 0')!.wall);
  const loadAfter = load();
  const gated = [
    'treecast --version',
    'treecast refs',
    'treecast ls (10 files)',
    'treecast snapshot (10 files, unchanged)',
    'treecast checkout (10 files, empty target)',
    'treecast checkout (10 files, target up to date)',
  ];
  return [
    '## Start-up (fixed cost)',
    '',
    `${runs} runs per command, each started by bash under GNU time (as every command of these benchmarks), so both sides carry that. ` +
      '`--help` loads every command (its whole module graph) and has no target.',
    '',
    table(r, 'node -e 0'),
    '',
    `Load average (1, 5, 15 min) at the start of this section: ${loadBefore}; at its end: ${loadAfter}.`,
    '',
    '### Targets',
    ...gated.map((label) => target(`${label} / node -e 0`, median(r.get(label)!.wall) / node, 1.5)),
  ].join('\n');
}
