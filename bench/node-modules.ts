/**
 * The pnpm and CI-cache job: restoring a real `node_modules` (bench/get-node-modules.sh: the
 * pinned dependencies of a web app, installed by pnpm 9) into an empty directory on tmpfs, against
 * `cp -al`, `tar -x` and pnpm itself installing offline from a warm store on the same filesystem.
 * At this size (a few hundred MB in tens of thousands of small files) the fixed cost of starting a
 * command matters, so it is measured in the same run and reported apart.
 */
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { type BenchContext, median, table, target, timeCases, type Timed } from './harness.js';

const sh = (cmd: string) => execFileSync('bash', ['-c', cmd], { stdio: ['ignore', 'ignore', 'inherit'] });
const shOut = (cmd: string) => execFileSync('bash', ['-c', cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const PNPM = 'pnpm@9.15.9';

function med(r: Map<string, Timed>, label: string): number {
  return median(r.get(label)!.wall);
}

export async function run(ctx: BenchContext): Promise<string> {
  const { tmpfs, treecast: tc, log } = ctx;
  // At least 7 rounds: each command is under a second but cp -al's rounds fell into two groups
  // (0.39 s and 0.52 s) between runs of this section, and 3 rounds let one group set the median.
  const runs = Math.max(ctx.runs, 7);
  const here = new URL('../../bench/', import.meta.url).pathname;
  log('fetching the node_modules corpus');
  const app = shOut(`bash ${q(join(here, 'get-node-modules.sh'))}`);
  const pnpm = shOut(`npx --yes -p ${PNPM} -c 'command -v pnpm'`);
  const root = join(tmpfs, 'nm');
  // The app and its pnpm store together, so the copy keeps node_modules hardlinked into the store.
  log('copying the corpus to tmpfs');
  sh(`mkdir -p ${q(root)} && cp -a ${q(dirname(app))} ${q(join(root, 'corpus'))}`);
  const src = join(root, 'corpus', 'app', 'node_modules');
  const pnpmStore = join(root, 'corpus', 'pnpm-store');
  const fresh = join(root, 'fresh-app');
  fs.mkdirSync(fresh);
  for (const f of ['package.json', 'pnpm-lock.yaml']) fs.copyFileSync(join(app, f), join(fresh, f));
  const count = (type: string) => Number(shOut(`find ${q(src)} -type ${type} | wc -l`));
  const [files, links, dirs] = [count('f'), count('l'), count('d')];
  const mb = Number(shOut(`du -sm ${q(src)} | cut -f1`));

  const store = join(root, 'store');
  const out = join(root, 'out');
  const tarball = join(root, 'node_modules.tar');
  const env = `TREECAST_STORE=${q(store)}`;
  fs.mkdirSync(join(root, 'empty'));
  sh(`${env} ${tc} snapshot ${q(src)} --ref nm && ${env} ${tc} snapshot ${q(join(root, 'empty'))} --ref empty`);
  sh(`tar -cf ${q(tarball)} -C ${q(src)} .`);
  const clear = `rm -rf ${q(out)} && mkdir ${q(out)}`;
  const clearPnpm = `rm -rf ${q(join(fresh, 'node_modules'))}`;
  const pnpmInstall = (method: string) =>
    `cd ${q(fresh)} && ${q(pnpm)} install --offline --frozen-lockfile --ignore-scripts --reporter=silent --store-dir ${q(pnpmStore)} --package-import-method ${method}`;

  log('node_modules restore cases');
  const FIXED = 'treecast checkout of an empty tree (fixed cost)';
  const r = timeCases(
    [
      { label: FIXED, setup: `rm -rf ${q(out)}`, cmd: `${env} ${tc} checkout empty ${q(out)}` },
      { label: 'treecast checkout --method hardlink', setup: `rm -rf ${q(out)}`, cmd: `${env} ${tc} checkout nm ${q(out)} --method hardlink` },
      { label: 'cp -al', setup: `rm -rf ${q(out)}`, cmd: `cp -al ${q(src)} ${q(out)}` },
      { label: 'pnpm install --offline --frozen-lockfile (hardlink)', setup: clearPnpm, cmd: pnpmInstall('hardlink') },
      { label: 'treecast checkout (copy)', setup: `rm -rf ${q(out)}`, cmd: `${env} ${tc} checkout nm ${q(out)} --method copy` },
      { label: 'tar -xf', setup: clear, cmd: `tar -xf ${q(tarball)} -C ${q(out)}` },
      { label: 'pnpm install --offline --package-import-method copy', setup: clearPnpm, cmd: pnpmInstall('copy') },
    ],
    runs,
    log,
  );
  sh(`rm -rf ${q(root)}`);

  const fixed = med(r, FIXED);
  const hardlink = med(r, 'treecast checkout --method hardlink');
  const copy = med(r, 'treecast checkout (copy)');
  const apart = ['treecast checkout --method hardlink', 'treecast checkout (copy)'].map(
    (l) => `| ${l} | ${med(r, l).toFixed(3)} | ${fixed.toFixed(3)} | ${(med(r, l) - fixed).toFixed(3)} |`,
  );
  return [
    '## node_modules restore (tmpfs)',
    '',
    `The corpus: bench/node-modules-app installed by ${PNPM} (${files} files, ${links} symlinks, ${dirs} directories, ${mb} MB). ` +
      `${runs} runs per command, each into an empty directory; the treecast store, the pnpm store and the targets share one tmpfs, ` +
      'so hardlinks are possible for both. pnpm installs offline from a warm store with the lockfile (scripts off).',
    '',
    table(r, 'cp -al'),
    '',
    '### Fixed cost apart',
    '',
    'A checkout of an empty tree is the start-up, store and target checks every checkout pays; the rest is the work.',
    '',
    '| command | median s | fixed cost s | work s |',
    '|---|---|---|---|',
    ...apart,
    '',
    '### Targets',
    target('checkout --method hardlink / cp -al', hardlink / med(r, 'cp -al'), 1.25),
    target('checkout --method hardlink / pnpm install --offline (hardlink)', hardlink / med(r, 'pnpm install --offline --frozen-lockfile (hardlink)'), 0.25),
    target('checkout (copy) / tar -xf', copy / med(r, 'tar -xf'), 0.75),
    target('checkout (copy) / pnpm install --offline --package-import-method copy', copy / med(r, 'pnpm install --offline --package-import-method copy'), 0.25),
  ].join('\n');
}
