/**
 * A small timing harness for whole commands: runs each command several times after a warm-up,
 * measuring wall time in this process and peak RSS with GNU time (/usr/bin/time -f %M), and
 * reports medians. Commands compared in one section are interleaved (A B A B ...) so machine
 * drift affects both alike.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Timed {
  label: string;
  wall: number[];
  rssMB: number[];
}

export interface Case {
  label: string;
  /** Shell command line to time. */
  cmd: string;
  /** Untimed shell command run before each timed run (e.g. clear the target). */
  setup?: string;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function sh(cmd: string): void {
  const r = spawnSync('bash', ['-c', cmd], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`bench setup failed (${r.status}): ${cmd}\n${r.stderr}`);
}

/** Times one run of `cmd`; returns [wall seconds, peak RSS MB]. Throws when the command fails. */
export function timeOnce(cmd: string): [number, number] {
  const dir = mkdtempSync(join(tmpdir(), 'tc-bench-'));
  const out = join(dir, 'time');
  try {
    const t0 = process.hrtime.bigint();
    const r = spawnSync('/usr/bin/time', ['-f', '%M', '-o', out, 'bash', '-c', cmd], { stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 64 << 20 });
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    if (r.status !== 0) throw new Error(`benchmarked command failed (${r.status}): ${cmd}\n${String(r.stderr).slice(-2000)}`);
    const kb = Number(readFileSync(out, 'utf8').trim().split('\n').pop());
    return [wall, kb / 1024];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Peak RSS (MB, the highest of any run) of every treecast command timed so far, by section and label. */
export const treecastPeaks = new Map<string, { section: string; label: string; peakMB: number }>();
let currentSection = '';
/** Names the section whose commands timeCases records next (bench/run.ts sets it). */
export function setSection(name: string): void {
  currentSection = name;
}
/** A command line runs treecast when it calls bin/treecast. */
const runsTreecast = (cmd: string) => /\/bin\/treecast\b/.test(cmd);

/** Runs all cases `runs` times each, interleaved, after one untimed warm-up round. */
export function timeCases(cases: Case[], runs: number, log: (s: string) => void = () => {}): Map<string, Timed> {
  const res = new Map<string, Timed>(cases.map((c) => [c.label, { label: c.label, wall: [], rssMB: [] }]));
  for (let round = -1; round < runs; round++) {
    for (const c of cases) {
      if (c.setup) sh(c.setup);
      const [wall, rss] = timeOnce(c.cmd);
      if (runsTreecast(c.cmd)) {
        const key = `${currentSection}\0${c.label}`;
        const seen = treecastPeaks.get(key);
        if (!seen || rss > seen.peakMB) treecastPeaks.set(key, { section: currentSection, label: c.label, peakMB: rss });
      }
      if (round >= 0) {
        res.get(c.label)!.wall.push(wall);
        res.get(c.label)!.rssMB.push(rss);
      }
      log(`  ${round < 0 ? 'warm-up' : `run ${round + 1}`} ${c.label}: ${wall.toFixed(3)} s, ${rss.toFixed(0)} MB`);
    }
  }
  return res;
}

/** A markdown table of medians, with each row's ratio to `baseline`'s median. */
export function table(results: Map<string, Timed>, baseline?: string): string {
  const base = baseline ? median(results.get(baseline)!.wall) : undefined;
  const rows = [...results.values()].map((t) => {
    const m = median(t.wall);
    const ratio = base ? (m / base).toFixed(2) : '';
    return `| ${t.label} | ${m.toFixed(3)} | ${Math.min(...t.wall).toFixed(3)}-${Math.max(...t.wall).toFixed(3)} | ${median(t.rssMB).toFixed(0)} | ${ratio} |`;
  });
  return [`| command | median s | range s | peak RSS MB | ratio${baseline ? ` vs ${baseline}` : ''} |`, '|---|---|---|---|---|', ...rows].join('\n');
}

/** Every treecast command may use at most this much memory (peak RSS, MB) on the benchmark corpora. */
export const MAX_RSS_MB = 300;

/** The peak-memory table of every treecast command timed in `sections`, with one target line per section. */
export function memoryReport(sections: readonly string[]): string {
  const rows = [...treecastPeaks.values()].filter((p) => sections.includes(p.section));
  const lines = ['| section | treecast command | peak RSS MB (highest run) |', '|---|---|---|'];
  for (const p of rows) lines.push(`| ${p.section} | ${p.label} | ${p.peakMB.toFixed(0)}${p.peakMB > MAX_RSS_MB ? ' (over)' : ''} |`);
  const targets = sections
    .filter((s) => rows.some((p) => p.section === s))
    .map((s) => {
      const worst = rows.filter((p) => p.section === s).reduce((a, b) => (b.peakMB > a.peakMB ? b : a));
      return target(`${s}: peak RSS of the largest treecast command (${worst.label}), MB`, worst.peakMB, MAX_RSS_MB);
    });
  return [lines.join('\n'), '', ...targets].join('\n');
}

/** One target line: the measured ratio, the limit, and whether it was met. */
export function target(name: string, value: number, limit: number, cmp: '<=' | '>=' = '<='): string {
  const met = cmp === '<=' ? value <= limit : value >= limit;
  return `- ${met ? 'met' : '**not met**'}: ${name}: ${value.toFixed(3)} (target ${cmp} ${limit})`;
}

export interface BenchContext {
  /** The Linux source tree to measure on. */
  corpus: string;
  /** A scratch folder on tmpfs. */
  tmpfs: string;
  /** A scratch folder on a reflink-capable XFS, when one could be mounted. */
  xfs?: string;
  /** Absolute path of bin/treecast. */
  treecast: string;
  runs: number;
  log(s: string): void;
}
