/**
 * Archive benchmarks on the corpus (copied to tmpfs first): treecast pack/unpack/import against
 * Info-ZIP zip/unzip, GNU tar, node-tar and yazl/yauzl. Unpack cases all read the same Info-ZIP
 * archive, so the readers are compared on identical input. pack at the other levels and from the
 * store runs once each, for its peak RSS. Returns a markdown section.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type BenchContext, type Case, type Timed, median, table, target, timeCases } from './harness.js';

function sh(cmd: string): void {
  const r = spawnSync('bash', ['-c', cmd], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`bench step failed (${r.status}): ${cmd}\n${r.stderr}`);
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export async function run(ctx: BenchContext): Promise<string> {
  const root = dirname(dirname(ctx.treecast));
  const script = (name: string) => q(join(root, 'bench', name));
  const w = join(ctx.tmpfs, 'archive-bench');
  const src = join(w, 'src');
  const tc = `${q(process.execPath)} ${q(ctx.treecast)}`;
  const node = q(process.execPath);
  const out = join(w, 'out');
  const zipDeflate = join(w, 'info-zip.zip');
  const zipStore = join(w, 'info-zip-store.zip');
  const tarFile = join(w, 'linux.tar');
  const store = join(w, 'store');
  sh(`rm -rf ${q(w)} && mkdir -p ${q(w)} && cp -a ${q(ctx.corpus)} ${q(src)}`);
  ctx.log('archive: preparing input archives');
  sh(`cd ${q(src)} && zip -q -r -y ${q(zipDeflate)} . && zip -q -r -y -0 ${q(zipStore)} . && tar -cf ${q(tarFile)} .`);
  const clearOut = `rm -rf ${q(out)} ${q(store)} ${q(join(w, 'o.zip'))} ${q(join(w, 'o.tar'))}`;
  const runs = ctx.runs;
  const parts: string[] = ['## Archives (zip)', '', `Corpus copied to tmpfs; ${runs} timed runs per command after a warm-up, interleaved; medians.`, ''];

  // ---------------------------------------------------------------- pack
  ctx.log('archive: pack');
  const packCases: Case[] = [
    { label: 'treecast pack (deflate)', cmd: `${tc} pack ${q(src)} ${q(join(w, 'o.zip'))}`, setup: clearOut },
    { label: 'zip -r -y (deflate)', cmd: `cd ${q(src)} && zip -q -r -y ${q(join(w, 'o.zip'))} .`, setup: clearOut },
    { label: 'yazl (deflate)', cmd: `${node} ${script('archive-yazl-pack.mjs')} ${q(src)} ${q(join(w, 'o.zip'))}`, setup: clearOut },
    { label: 'treecast pack --level store', cmd: `${tc} pack --level store ${q(src)} ${q(join(w, 'o.zip'))}`, setup: clearOut },
    { label: 'zip -r -y -0 (store)', cmd: `cd ${q(src)} && zip -q -r -y -0 ${q(join(w, 'o.zip'))} .`, setup: clearOut },
    { label: 'tar -c', cmd: `tar -cf ${q(join(w, 'o.tar'))} -C ${q(src)} .`, setup: clearOut },
    { label: 'node-tar c', cmd: `${node} ${script('archive-node-tar.mjs')} c ${q(src)} ${q(join(w, 'o.tar'))}`, setup: clearOut },
  ];
  const pack = timeCases(packCases, runs, ctx.log);
  sh(`${clearOut} && ${tc} pack ${q(src)} ${q(join(w, 'o.zip'))}`);
  const ourSize = statSync(join(w, 'o.zip')).size;
  const zipSize = statSync(zipDeflate).size;
  parts.push('### pack', '', table(pack, 'zip -r -y (deflate)'), '');
  parts.push(`Archive sizes: treecast ${ourSize} bytes, Info-ZIP zip ${zipSize} bytes (ratio ${(ourSize / zipSize).toFixed(3)}).`, '');
  const packRatio = median(pack.get('treecast pack (deflate)')!.wall) / median(pack.get('zip -r -y (deflate)')!.wall);

  // ---------------------------------------------------------------- unpack
  // treecast and unzip get at least 3 rounds: the stored target's margin (0.3x) is a few percent,
  // and one round of unzip ranged 6.8-8.0 s between runs; the JavaScript peers (yauzl, node-tar)
  // take 40-60 s a round and keep `runs`.
  const targetRuns = Math.max(runs, 3);
  const unpackRows = (zip: string, tag: string): Case[] => [
    { label: `treecast unpack (${tag})`, cmd: `${tc} unpack ${q(zip)} ${q(out)}`, setup: clearOut },
    { label: `unzip (${tag})`, cmd: `mkdir ${q(out)} && unzip -q ${q(zip)} -d ${q(out)}`, setup: clearOut },
  ];
  const yauzlRow = (zip: string, tag: string): Case => ({
    label: `yauzl (${tag})`,
    cmd: `mkdir ${q(out)} && ${node} ${script('archive-yauzl-unpack.mjs')} ${q(zip)} ${q(out)}`,
    setup: clearOut,
  });
  const both = (a: Map<string, Timed>, b: Map<string, Timed>) => new Map([...a, ...b]);
  ctx.log('archive: unpack stored');
  const unStore = both(
    timeCases(unpackRows(zipStore, 'stored'), targetRuns, ctx.log),
    timeCases(
      [
        yauzlRow(zipStore, 'stored'),
        { label: 'tar -x', cmd: `mkdir ${q(out)} && tar -xf ${q(tarFile)} -C ${q(out)}`, setup: clearOut },
        { label: 'node-tar x', cmd: `mkdir ${q(out)} && ${node} ${script('archive-node-tar.mjs')} x ${q(tarFile)} ${q(out)}`, setup: clearOut },
      ],
      runs,
      ctx.log,
    ),
  );
  parts.push(`### unpack, stored archive (treecast and unzip: ${targetRuns} timed runs each)`, '', table(unStore, 'unzip (stored)'), '');
  ctx.log('archive: unpack deflated');
  const unDeflate = both(timeCases(unpackRows(zipDeflate, 'deflated'), targetRuns, ctx.log), timeCases([yauzlRow(zipDeflate, 'deflated')], runs, ctx.log));
  parts.push(`### unpack, deflated archive (treecast and unzip: ${targetRuns} timed runs each)`, '', table(unDeflate, 'unzip (deflated)'), '');

  // ---------------------------------------------------------------- import
  ctx.log('archive: import');
  // At least 3 rounds too: its target's margin is a few percent, and a round takes ~12 s.
  const importRuns = targetRuns;
  const imp = timeCases(
    [
      { label: 'treecast import', cmd: `${tc} import ${q(zipDeflate)} --store ${q(store)}`, setup: clearOut },
      { label: 'treecast unpack + snapshot', cmd: `${tc} unpack ${q(zipDeflate)} ${q(out)} && ${tc} snapshot ${q(out)} --store ${q(store)}`, setup: clearOut },
    ],
    importRuns,
    ctx.log,
  );
  parts.push(`### import (into an empty store; ${importRuns} timed runs each)`, '', table(imp, 'treecast unpack + snapshot'), '');

  // ---------------------------------------------------------------- memory at every level
  // One timed run each (after the warm-up): these are here for their peak RSS, which the memory
  // table below holds to its limit like every other treecast command.
  ctx.log('archive: pack at the other levels, and from the store');
  const ref = 'bench-linux';
  sh(`${clearOut} && ${tc} import ${q(zipDeflate)} --store ${q(store)} --ref ${ref}`);
  const clearZip = `rm -f ${q(join(w, 'o.zip'))}`;
  const levels = timeCases(
    [
      { label: 'treecast pack --level fast', cmd: `${tc} pack --level fast ${q(src)} ${q(join(w, 'o.zip'))}`, setup: clearZip },
      { label: 'treecast pack --level best', cmd: `${tc} pack --level best ${q(src)} ${q(join(w, 'o.zip'))}`, setup: clearZip },
      { label: 'treecast pack REF (from the store, deflate)', cmd: `${tc} pack ${ref} ${q(join(w, 'o.zip'))} --store ${q(store)}`, setup: clearZip },
      { label: 'treecast pack REF --level store (from the store)', cmd: `${tc} pack --level store ${ref} ${q(join(w, 'o.zip'))} --store ${q(store)}`, setup: clearZip },
    ],
    1,
    ctx.log,
  );
  sh(clearOut);
  parts.push('### pack at the other levels, and from the store (one run each, for peak RSS)', '', table(levels), '');

  const m = (r: Map<string, { wall: number[] }>, k: string) => median(r.get(k)!.wall);
  parts.push(
    '### targets',
    '',
    target('unpack stored / unzip', m(unStore, 'treecast unpack (stored)') / m(unStore, 'unzip (stored)'), 0.3),
    target('unpack deflated / unzip', m(unDeflate, 'treecast unpack (deflated)') / m(unDeflate, 'unzip (deflated)'), 0.5),
    target('pack deflate / zip -r', packRatio, 0.6),
    target('pack size / zip size', ourSize / zipSize, 1.05),
    target('import / (unpack + snapshot)', m(imp, 'treecast import') / m(imp, 'treecast unpack + snapshot'), 0.5),
    '',
  );
  if (existsSync(w)) sh(`rm -rf ${q(w)}`);
  return parts.join('\n');
}
