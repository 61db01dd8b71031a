/**
 * `npm run bench`: side-by-side benchmarks against the peer tools, on the Linux 6.1 source tree,
 * written to BENCHMARKS.md. Not part of `npm test`.
 *
 *   npm run bench -- [--runs N] [--no-prefault] [--only foundation,archive,remote,server-load,startup,node-modules,cache,tar] [--corpus DIR] [--out FILE]
 *
 * Needs root for the loop-mounted XFS (reflink) part, and the peer tools: git, ostree, tar, cp,
 * Info-ZIP zip/unzip, rsync, nginx (Debian packages), GNU time.
 */
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { cpus, totalmem, release } from 'node:os';
import { join } from 'node:path';
import { type BenchContext, memoryReport, setSection } from './harness.js';

interface Section {
  name: string;
  run(ctx: BenchContext): Promise<string>;
}

async function sections(): Promise<Section[]> {
  const list: Section[] = [{ name: 'foundation', run: (await import('./foundation.js')).run }];
  const optional = [
    ['archive', './archive.js'],
    ['remote', './remote.js'],
    ['server-load', './server-load.js'],
    ['startup', './startup.js'],
    ['node-modules', './node-modules.js'],
    ['cache', './cache.js'],
    ['tar', './tar.js'],
  ] as const;
  for (const [name, file] of optional) {
    if (fs.existsSync(new URL(file, import.meta.url))) list.push({ name, run: (await import(file)).run });
  }
  return list;
}

/**
 * On a virtual machine, the first write to a never-touched page of guest memory is several times
 * slower than later ones (measured here: 316 MB/s against 1.3 GB/s for 1 GiB into tmpfs). Writing
 * most of free memory once up front keeps that one-off cost out of whichever command runs first.
 */
function prefault(dir: string, log: (s: string) => void): void {
  const freeMiB = Number(/MemAvailable:\s+(\d+)/.exec(fs.readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0) / 1024;
  const mib = Math.max(0, Math.min(16384, Math.floor(freeMiB - 6144)));
  if (mib <= 0) return;
  log(`touching ${mib} MiB of memory once (see prefault in bench/run.ts)`);
  const f = join(dir, 'prefault');
  execFileSync('dd', ['if=/dev/zero', `of=${f}`, 'bs=1M', `count=${mib}`], { stdio: 'ignore' });
  fs.rmSync(f);
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const root = new URL('../../', import.meta.url).pathname;
  const corpus =
    arg('--corpus') ?? process.env.TREECAST_BENCH_CORPUS ?? execFileSync('bash', [join(root, 'bench/get-linux-source.sh')], { encoding: 'utf8' }).trim();
  const runs = Number(arg('--runs') ?? 3);
  const only = arg('--only')?.split(',');
  const out = arg('--out') ?? join(root, 'BENCHMARKS.md');
  const tmpfs = fs.mkdtempSync('/dev/shm/treecast-bench-');
  const log = (s: string) => process.stderr.write(`${s}\n`);
  // --no-prefault: for sections that measure memory of one process, not tmpfs speed (server-load).
  if (!process.argv.includes('--no-prefault')) prefault(tmpfs, log);
  const ctx: BenchContext = { corpus, tmpfs, treecast: join(root, 'bin/treecast'), runs, log };
  // Sections not run this time keep their figures from the last run that made them.
  const previous = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : '';
  const parts: string[] = [];
  try {
    for (const s of await sections()) {
      if (only && !only.includes(s.name)) {
        const kept = new RegExp(`<!-- section ${s.name} -->[\\s\\S]*?<!-- end ${s.name} -->`).exec(previous);
        if (kept) parts.push(kept[0]);
        continue;
      }
      log(`== ${s.name}`);
      const when = new Date().toISOString().slice(0, 16).replace('T', ' ');
      setSection(s.name);
      const body = await s.run(ctx);
      // Every treecast command's peak RSS, against the memory target, whatever the section measured.
      const memory = `\n\n### Peak memory (${s.name})\n\n${memoryReport([s.name])}`;
      parts.push(`<!-- section ${s.name} -->\n${body}${memory}\n\n(measured ${when} UTC)\n<!-- end ${s.name} -->`);
    }
  } finally {
    fs.rmSync(tmpfs, { recursive: true, force: true });
  }
  const header = [
    '# Benchmarks',
    '',
    `Written by \`npm run bench\`: ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), ` +
      `${Math.round(totalmem() / 2 ** 30)} GiB, Linux ${release()}, Node ${process.version}. Corpus: the Linux 6.1 source tree ` +
      '(bench/get-linux-source.sh). Each section says when it was measured; sections can be run alone with `--only NAME`. ' +
      'Each figure is the median of the runs shown, after one untimed warm-up; commands compared ' +
      'in one table ran interleaved in the same session, so the ratios hold even when the machine drifts. Peak RSS comes from GNU time.',
    '',
  ].join('\n');
  fs.writeFileSync(out, `${header}\n${parts.join('\n\n')}\n`);
  log(`wrote ${out}`);
}

await main();
