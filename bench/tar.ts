/**
 * tar benchmarks (section `tar`): unpack of .tar, .tar.gz and .tar.zst archives made by GNU tar and
 * zstd, and pack to .tar.zst and .tar.gz, on the Linux tree copied to tmpfs; then a real pnpm node_modules
 * (bench/get-node-modules.sh) packed by `tar --zstd` and unpacked. treecast against GNU tar,
 * bsdtar and node-tar, in the same run. Returns a markdown section.
 */
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { type BenchContext, type Case, median, table, target, timeCases, type Timed } from './harness.js';

function sh(cmd: string): string {
  const r = spawnSync('bash', ['-c', cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`bench step failed (${r.status}): ${cmd}\n${r.stderr}`);
  return r.stdout.trim();
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
/** zstd decompressing `archive` into a pipe, as GNU tar and treecast run it. */
const zstdAlone = (archive: string) => `zstd -dcq --long=31 ${q(archive)} | cat >/dev/null`;
const med = (r: Map<string, Timed>, label: string) => median(r.get(label)!.wall);
const rss = (r: Map<string, Timed>, label: string) => median(r.get(label)!.rssMB);

/** CPU seconds (user + system) and wall seconds of one run of `cmd` after `setup`, from GNU time. */
function timeOnce(cmd: string, setup: string): { cpu: number; wall: number } {
  sh(setup);
  const [user, sys, wall] = sh(`/usr/bin/time -f '%U %S %e' bash -c ${q(cmd)} 2>&1 >/dev/null | tail -1`).split(' ').map(Number);
  return { cpu: user! + sys!, wall: wall! };
}
const cpuOnce = (cmd: string, setup: string) => timeOnce(cmd, setup).cpu;

/**
 * One line on what the CPU allows: treecast's CPU time (user + system, which includes the
 * decompressor it runs) divided by the cores is the least wall time it could take if every core
 * were busy all the time, here as a ratio to the peer's median. A ratio target below that floor
 * cannot be met on this machine without doing less work in all.
 */
function cpuFloor(c: Case[], gnu: string, decoder: string | undefined, gnuMedian: number): string {
  const cores = availableParallelism();
  const tc = cpuOnce(c[0]!.cmd, c[0]!.setup!);
  const peer = cpuOnce(c[1]!.cmd, c[1]!.setup!);
  const d = decoder ? timeOnce(decoder, 'true') : undefined;
  const dec = d ? `, the decompressor alone into a pipe (\`${decoder!.replace(/'[^']*'/g, 'ARCHIVE')}\`) ${d.cpu.toFixed(2)} s` : '';
  // A zstd frame decodes on one thread (treecast runs the same program), so its wall time bounds any unpack it feeds.
  const decWall = d && decoder!.startsWith('zstd') ? ` The decompressor alone took ${d.wall.toFixed(2)} s of wall time, ${(d.wall / gnuMedian).toFixed(2)}x ${gnu}'s median: no unpack it feeds ends sooner.` : '';
  // The same floor for a treecast that spent exactly the peer's CPU: the least ratio any unpack as
  // efficient as the peer can reach on these cores, to set a target beside.
  const peerFloor = ` Were treecast to spend exactly ${gnu}'s CPU, the floor would be ${(peer / cores).toFixed(3)} s, ${(peer / cores / gnuMedian).toFixed(2)}x.`;
  return `CPU seconds (user + system, one more run each): treecast ${tc.toFixed(2)}, ${gnu} ${peer.toFixed(2)}${dec}. On ${cores} cores treecast needs at least ${(tc / cores).toFixed(3)} s of wall time (CPU / cores), ${(tc / cores / gnuMedian).toFixed(2)}x ${gnu}'s median.${peerFloor}${decWall}`;
}

/**
 * Run as root, GNU tar and bsdtar restore every entry's owner (an fchown per file, and an fchmod
 * beside it in GNU tar); treecast does that only with --same-owner. So that both sides do the same
 * work, the peers are then told --no-same-owner. Measured: `tar -xf` of the Linux tree's .tar took
 * 1.73 s of CPU without it, 1.58 s with it (medians of 3 interleaved runs, load about 8 on 2
 * cores); strace -c of `tar --zstd -xf` on the node_modules corpus counts 22,618 fchown and
 * 22,618 fchmod for 26,242 files. (node-tar, far behind either way, keeps its defaults.)
 */
const peerOwner = process.getuid?.() === 0 ? ' --no-same-owner' : '';

/**
 * The unpack cases for one archive: treecast, GNU tar, bsdtar, node-tar (fed by zstd for .tar.zst).
 * Each side starts from the same state: the previous run's tree removed (and the directory made
 * for the peers, which need it to exist) outside the timed part. Removing a 1.3 GB tree on tmpfs
 * frees its pages before rm returns; what the kernel defers (inode and dentry frees) showed no
 * trace in the next command: treecast 2.58 s and GNU tar 1.79 s of CPU (user + system) right
 * after the removal, 2.67 s and 1.77 s after `sync; sleep 3` (medians of 4 interleaved runs each,
 * load 5-9 on 2 cores), so no pause is added.
 */
function unpackCases(tc: string, nodeTar: string, archive: string, out: string, gnuFlags: string, zstd: boolean): Case[] {
  const clear = `rm -rf ${q(out)} && mkdir ${q(out)}`;
  return [
    { label: 'treecast unpack', cmd: `${tc} unpack ${q(archive)} ${q(out)}`, setup: `rm -rf ${q(out)}` },
    { label: gnuFlags, cmd: `${gnuFlags} ${q(archive)}${peerOwner} -C ${q(out)}`, setup: clear },
    { label: 'bsdtar -xf', cmd: `bsdtar -xf ${q(archive)}${peerOwner} -C ${q(out)}`, setup: clear },
    {
      label: zstd ? 'zstd -dc \\| node-tar x' : 'node-tar x',
      cmd: zstd ? `zstd -dc --long=31 ${q(archive)} | ${nodeTar} x - ${q(out)}` : `${nodeTar} x ${q(archive)} ${q(out)}`,
      setup: clear,
    },
  ];
}

export async function run(ctx: BenchContext): Promise<string> {
  const root = dirname(dirname(ctx.treecast));
  const w = join(ctx.tmpfs, 'tar-bench');
  const src = join(w, 'src');
  const out = join(w, 'out');
  const tcs = `${q(process.execPath)} ${q(ctx.treecast)}`;
  const nodeTar = `${q(process.execPath)} ${q(join(root, 'bench', 'archive-node-tar.mjs'))}`;
  const env = `TREECAST_STORE=${q(join(w, 'store'))}`;
  const runs = ctx.runs;
  // The machine may be shared: the load average before and after says how much.
  const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');
  const loadBefore = load();
  const parts: string[] = [
    '## tar archives',
    '',
    `Linux tree copied to tmpfs; archives made by GNU tar (and zstd -T0 -3 for .tar.zst, as actions/cache does); ${runs} timed run(s) per command after a warm-up, interleaved; medians. Each unpack goes into an empty directory.${peerOwner ? ' Run as root, GNU tar and bsdtar unpack with --no-same-owner, as treecast restores owners only when asked (--same-owner).' : ''} treecast uses both cores and the tars one: where other work holds a core, treecast's wall time moves towards its CPU time, so the CPU line under each table says more than the wall ratio on a busy machine.`,
    '',
  ];
  sh(`rm -rf ${q(w)} && mkdir -p ${q(w)} && cp -a ${q(ctx.corpus)} ${q(src)}`);
  const tarFile = join(w, 'linux.tar');
  const gz = join(w, 'linux.tar.gz');
  const zst = join(w, 'linux.tar.zst');
  ctx.log('tar: preparing input archives');
  sh(`tar -cf ${q(tarFile)} -C ${q(src)} . && tar -czf ${q(gz)} -C ${q(src)} . && tar -cf - -C ${q(src)} . | zstd -T0 -3 -q -o ${q(zst)}`);

  const targets: string[] = [];
  const sections: [string, string, string, boolean, number, string | undefined][] = [
    ['.tar.zst', zst, 'tar --zstd -xf', true, 0.6, zstdAlone(zst)],
    ['.tar.gz', gz, 'tar -xzf', false, 0.75, `gzip -dc ${q(gz)} | cat >/dev/null`],
    ['.tar', tarFile, 'tar -xf', false, 0.6, undefined],
  ];
  for (const [name, archive, gnu, isZstd, limit, decoder] of sections) {
    ctx.log(`tar: unpack ${name}`);
    const cases = unpackCases(`${env} ${tcs}`, nodeTar, archive, out, gnu, isZstd);
    const r = timeCases(cases, runs, ctx.log);
    parts.push(`### unpack ${name} (${statSync(archive).size} bytes)`, '', table(r, gnu), '', cpuFloor(cases, gnu, decoder, med(r, gnu)), '');
    targets.push(target(`unpack ${name}: treecast / ${gnu}`, med(r, 'treecast unpack') / med(r, gnu), limit));
    targets.push(target(`unpack ${name}: treecast peak RSS MB`, rss(r, 'treecast unpack'), 300));
  }

  ctx.log('tar: pack .tar.zst');
  const o = join(w, 'o.tar.zst');
  const clearO = `rm -f ${q(o)}`;
  const pack = timeCases(
    [
      { label: 'treecast pack .tar.zst', cmd: `${tcs} pack ${q(src)} ${q(o)}`, setup: clearO },
      { label: 'tar -cf - . \\| zstd -T0 -3', cmd: `cd ${q(src)} && tar -cf - . | zstd -T0 -3 -q -o ${q(o)}`, setup: clearO },
      { label: 'bsdtar --zstd -cf', cmd: `cd ${q(src)} && bsdtar --zstd -cf ${q(o)} .`, setup: clearO },
      { label: 'node-tar c \\| zstd -T0 -3', cmd: `${nodeTar} c ${q(src)} - | zstd -T0 -3 -q -o ${q(o)}`, setup: clearO },
    ],
    runs,
    ctx.log,
  );
  sh(`${clearO} && ${tcs} pack ${q(src)} ${q(o)}`);
  const ours = statSync(o).size;
  const theirs = statSync(zst).size;
  parts.push('### pack .tar.zst', '', table(pack, 'tar -cf - . \\| zstd -T0 -3'), '');
  // Both sides keep every core busy (zstd -T0), so on a loaded machine the wall ratio tends to the CPU ratio.
  const packCpu = [cpuOnce(`${tcs} pack ${q(src)} ${q(o)}`, clearO), cpuOnce(`cd ${q(src)} && tar -cf - . | zstd -T0 -3 -q -o ${q(o)}`, clearO)];
  parts.push(`CPU seconds (user + system, zstd's threads included, one more run each): treecast ${packCpu[0]!.toFixed(2)}, tar -cf - . | zstd -T0 -3 ${packCpu[1]!.toFixed(2)} (ratio ${(packCpu[0]! / packCpu[1]!).toFixed(2)}). Both keep every core busy, so where the cores are the limit the wall ratio tends to this one.`, '');
  parts.push(`Archive sizes: treecast ${ours} bytes, tar | zstd -T0 -3 ${theirs} bytes (ratio ${(ours / theirs).toFixed(4)}).`, '');
  targets.push(target('pack .tar.zst: treecast / tar | zstd -T0 -3', med(pack, 'treecast pack .tar.zst') / med(pack, 'tar -cf - . \\| zstd -T0 -3'), 1.2));
  targets.push(target('pack .tar.zst: archive size / tar | zstd -T0 -3', ours / theirs, 1.03));
  targets.push(target('pack .tar.zst: treecast peak RSS MB', rss(pack, 'treecast pack .tar.zst'), 300));

  ctx.log('tar: pack .tar.gz');
  const og = join(w, 'o.tar.gz');
  const clearOg = `rm -f ${q(og)}`;
  const packGz = timeCases(
    [
      { label: 'treecast pack .tar.gz', cmd: `${tcs} pack ${q(src)} ${q(og)}`, setup: clearOg },
      { label: 'tar -czf', cmd: `cd ${q(src)} && tar -czf ${q(og)} .`, setup: clearOg },
      { label: 'bsdtar -czf', cmd: `cd ${q(src)} && bsdtar -czf ${q(og)} .`, setup: clearOg },
      { label: 'node-tar c \\| gzip -6', cmd: `${nodeTar} c ${q(src)} - | gzip -6 -n > ${q(og)}`, setup: clearOg },
    ],
    runs,
    ctx.log,
  );
  sh(`${clearOg} && ${tcs} pack ${q(src)} ${q(og)}`);
  const oursGz = statSync(og).size;
  const theirsGz = statSync(gz).size;
  parts.push('### pack .tar.gz', '', table(packGz, 'tar -czf'), '');
  parts.push(`Archive sizes: treecast ${oursGz} bytes, tar -czf ${theirsGz} bytes (ratio ${(oursGz / theirsGz).toFixed(4)}).`, '');
  targets.push(target('pack .tar.gz: treecast / tar -czf', med(packGz, 'treecast pack .tar.gz') / med(packGz, 'tar -czf'), 1.0));
  targets.push(target('pack .tar.gz: archive size / tar -czf', oursGz / theirsGz, 1.03));
  targets.push(target('pack .tar.gz: treecast peak RSS MB', rss(packGz, 'treecast pack .tar.gz'), 300));
  sh(`rm -rf ${q(w)}`);

  // ---------------------------------------------------------------- node_modules
  ctx.log('tar: node_modules corpus');
  const app = sh(`bash ${q(join(root, 'bench', 'get-node-modules.sh'))}`);
  const nm = join(app, 'node_modules');
  const nmw = join(ctx.tmpfs, 'tar-nm');
  const nmZst = join(nmw, 'node_modules.tar.zst');
  const nmOut = join(nmw, 'out');
  sh(`rm -rf ${q(nmw)} && mkdir -p ${q(nmw)} && tar --zstd -cf ${q(nmZst)} -C ${q(nm)} .`);
  const count = (type: string) => sh(`find ${q(nm)} -type ${type} | wc -l`);
  const nmCases = unpackCases(`${env} ${tcs}`, nodeTar, nmZst, nmOut, 'tar --zstd -xf', true);
  const nmRes = timeCases(nmCases, runs, ctx.log);
  const nmFloor = cpuFloor(nmCases, 'tar --zstd -xf', zstdAlone(nmZst), med(nmRes, 'tar --zstd -xf'));
  // (w too: the treecast runs above made their store there again)
  sh(`rm -rf ${q(nmw)} ${q(w)}`);
  parts.push(
    `### node_modules, unpack .tar.zst (${count('f')} files, ${count('l')} symlinks, ${count('d')} directories; bench/get-node-modules.sh; packed by tar --zstd)`,
    '',
    table(nmRes, 'tar --zstd -xf'),
    '',
    nmFloor,
    '',
  );
  targets.push(target('node_modules unpack .tar.zst: treecast / tar --zstd -xf', med(nmRes, 'treecast unpack') / med(nmRes, 'tar --zstd -xf'), 0.6));
  targets.push(target('node_modules unpack: treecast peak RSS MB', rss(nmRes, 'treecast unpack'), 300));
  parts.push(`Load average (1, 5, 15 min) at the start of this section: ${loadBefore}; at its end: ${load()}.`, '');
  parts.push('### Targets', '', ...targets);
  return parts.join('\n');
}
