/**
 * Every command through the OS errors it can meet, on real file systems: ENOENT, ENOTDIR, EISDIR,
 * EEXIST, EACCES (as an unprivileged user, since root bypasses permissions), ENOSPC on a tiny
 * tmpfs and EROFS on a read-only tmpfs. Each must end with a coded error naming the path and a
 * documented exit code, never "internal error" or a stack trace, in human and --json output.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { tempDir } from './helpers/tmp.js';
import { startServer } from './helpers/remote.js';
import { publicBin } from './helpers/public-package.js';

/** The uid and gid of `nobody` on Debian. */
const NOBODY = { uid: 65534, gid: 65534 };

const bin = new URL('../../bin/treecast', import.meta.url).pathname;

interface Case {
  cmd: string;
  errno: string;
  args: string[];
  /** The path the message must name. */
  path: string;
  /** The documented exit code expected (7 unless said). */
  code?: number;
  /** The command has no --json (the blob plumbing). */
  noJson?: boolean;
  asNobody?: boolean;
  /** ENOTDIR: the parent the message must name as not a directory. */
  blocker?: string;
}

function run(args: string[], asNobody: boolean, defaultStore: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [asNobody ? publicBin() : bin, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(asNobody ? NOBODY : {}),
      env: { ...process.env, TREECAST_STORE: defaultStore },
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (err += d));
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

const mounts: string[] = [];
function mountTmpfs(at: string, size: string): void {
  fs.mkdirSync(at);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', at]);
  mounts.push(at);
}

test('every command reports every OS error as a coded error naming the path', { skip: process.getuid?.() !== 0 && 'needs root to mount tmpfs and to run commands as another user' }, async () => {
  const base = tempDir('tc-oserr');
  fs.chmodSync(base, 0o755);
  const p = (...parts: string[]) => join(base, ...parts);
  const cli = (args: string[]) => execFileSync(process.execPath, [bin, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();

  // The inputs: a tree (with a file too big for the tiny tmpfs), its archive, a root-owned store.
  fs.mkdirSync(p('src', 'sub'), { recursive: true });
  fs.writeFileSync(p('src', 'f'), 'f');
  fs.writeFileSync(p('src', 'sub', 'g'), 'g');
  fs.writeFileSync(p('src', 'big'), randomBytes(600 << 10));
  const store = p('store');
  const tree = cli(['snapshot', p('src'), '--store', store, '--ref', 'r']);
  const bigBlob = cli(['blob', 'put', p('src', 'big'), '--store', store]);
  cli(['pack', p('src'), p('a.zip'), '--level', 'store', '--store', store]);
  fs.writeFileSync(p('afile'), 'a file');
  fs.mkdirSync(p('adir'));

  // For the unprivileged user: a store it owns, and things it may not read or write.
  const userStore = p('user-store');
  fs.cpSync(store, userStore, { recursive: true });
  execFileSync('chown', ['-R', `${NOBODY.uid}:${NOBODY.gid}`, userStore]);
  fs.mkdirSync(p('closed', 'inner'), { recursive: true, mode: 0o700 });
  fs.chmodSync(p('closed'), 0o700);
  fs.mkdirSync(p('readonly-dir'), { mode: 0o555 });
  fs.chmodSync(p('readonly-dir'), 0o555);
  fs.mkdirSync(p('src-locked', 'hidden'), { recursive: true });
  fs.writeFileSync(p('src-locked', 'ok'), 'ok');
  fs.chmodSync(p('src-locked', 'hidden'), 0o700);
  fs.copyFileSync(p('a.zip'), p('secret.zip'));
  fs.chmodSync(p('secret.zip'), 0o600);
  fs.writeFileSync(p('secret'), 'secret');
  fs.writeFileSync(p('fresh'), 'in no store yet');
  fs.mkdirSync(p('fresh-dir'));
  fs.writeFileSync(p('fresh-dir', 'x'), 'in no store either');
  fs.chmodSync(p('secret'), 0o600);

  // A second tree only the server has (the read-only store gets only its blob), for pulls that must write.
  fs.mkdirSync(p('src2'));
  fs.writeFileSync(p('src2', 'h'), randomBytes(600 << 10));
  const server = await startServer(store);
  let tree2 = '';
  try {
    mountTmpfs(p('small'), '256k');
    mountTmpfs(p('ro'), '1m');
    execFileSync('mount', ['-o', 'remount,ro', p('ro')]);
    // A whole store on a read-only file system, holding an unreachable old blob and a corrupt one.
    mountTmpfs(p('ro-store'), '4m');
    const roStore = p('ro-store', 's');
    fs.cpSync(store, roStore, { recursive: true });
    const orphan = cli(['blob', 'put', p('src2', 'h'), '--store', roStore]).split('/')[0]!;
    fs.utimesSync(join(roStore, 'cas', orphan.slice(0, 2), orphan), 1, 1);
    const fBlob = join(roStore, 'cas', ...(() => {
      const h = cli(['blob', 'put', p('src', 'f'), '--store', roStore]).split('/')[0]!;
      return [h.slice(0, 2), h];
    })());
    fs.chmodSync(fBlob, 0o644);
    fs.writeFileSync(fBlob, 'F');
    execFileSync('mount', ['-o', 'remount,ro', p('ro-store')]);
    tree2 = cli(['snapshot', p('src2'), '--store', store]);

    const S = ['--store', store];
    const cases: Case[] = [
      // ENOENT
      { cmd: 'snapshot', errno: 'ENOENT', args: ['snapshot', p('nosuch'), ...S], path: p('nosuch') },
      { cmd: 'blob put', errno: 'ENOENT', args: ['blob', 'put', p('nosuch'), ...S], path: p('nosuch') },
      { cmd: 'pack', errno: 'ENOENT', args: ['pack', p('nosuch'), p('o.zip'), ...S], path: p('nosuch'), code: 3 },
      { cmd: 'unpack', errno: 'ENOENT', args: ['unpack', p('nosuch.zip'), p('out-enoent')], path: p('nosuch.zip') },
      { cmd: 'import', errno: 'ENOENT', args: ['import', p('nosuch.zip'), ...S], path: p('nosuch.zip') },
      // push takes DIR or a digest or ref; an absolute path that is neither is a missing directory.
      { cmd: 'push', errno: 'ENOENT', args: ['push', p('nosuch'), server.url, ...S], path: p('nosuch') },
      // ENOTDIR: a parent is a file
      { cmd: 'snapshot', errno: 'ENOTDIR', args: ['snapshot', p('afile', 'sub'), ...S], path: p('afile', 'sub'), blocker: p('afile') },
      { cmd: 'checkout', errno: 'ENOTDIR', args: ['checkout', 'r', p('afile', 'sub'), ...S], path: p('afile', 'sub'), blocker: p('afile') },
      { cmd: 'unpack', errno: 'ENOTDIR', args: ['unpack', p('a.zip'), p('afile', 'sub')], path: p('afile', 'sub'), blocker: p('afile') },
      { cmd: 'pack', errno: 'ENOTDIR', args: ['pack', p('src'), p('afile', 'o.zip'), ...S], path: p('afile', 'o.zip'), blocker: p('afile') },
      { cmd: 'blob put', errno: 'ENOTDIR', args: ['blob', 'put', p('afile', 'x'), ...S], path: p('afile', 'x'), blocker: p('afile') },
      { cmd: 'import', errno: 'ENOTDIR', args: ['import', p('afile', 'x.zip'), ...S], path: p('afile', 'x.zip'), blocker: p('afile') },
      { cmd: 'push', errno: 'ENOTDIR', args: ['push', p('afile', 'sub'), server.url, ...S], path: p('afile', 'sub'), blocker: p('afile') },
      ...['ls r', 'diff r r', 'verify', 'gc', `blob get ${bigBlob}`, `pull ${tree2} ${server.url}`, 'refs'].map((c): Case => ({
        cmd: c.split(' ')[0]!, errno: 'ENOTDIR', args: [...c.split(' '), '--store', p('afile', 'store')], path: p('afile', 'store'), blocker: p('afile'),
      })),
      // EISDIR
      { cmd: 'pack', errno: 'EISDIR', args: ['pack', p('src'), p('adir'), ...S], path: p('adir') },
      { cmd: 'unpack', errno: 'EISDIR', args: ['unpack', p('adir'), p('out-eisdir')], path: p('adir') },
      { cmd: 'import', errno: 'EISDIR', args: ['import', p('adir'), ...S], path: p('adir') },
      { cmd: 'blob put', errno: 'EISDIR', args: ['blob', 'put', p('adir'), ...S], path: p('adir') },
      // EEXIST: a file where a directory must be made
      { cmd: 'checkout', errno: 'EEXIST', args: ['checkout', 'r', p('afile'), ...S], path: p('afile') },
      { cmd: 'unpack', errno: 'EEXIST', args: ['unpack', p('a.zip'), p('afile')], path: p('afile') },
      ...['snapshot src', 'ls r', 'verify', 'gc', 'import a.zip'].map((c): Case => ({
        cmd: c.split(' ')[0]!, errno: 'EEXIST', args: [...c.split(' ').map((a, i) => (i === 1 && a !== 'r' ? p(a) : a)), '--store', p('afile')], path: p('afile'),
      })),
      // EACCES, as an unprivileged user
      { cmd: 'snapshot', errno: 'EACCES', args: ['snapshot', p('src-locked'), '--store', userStore], path: p('src-locked', 'hidden'), asNobody: true },
      { cmd: 'snapshot', errno: 'EACCES', args: ['snapshot', p('src'), '--store', p('readonly-dir', 'store')], path: p('readonly-dir', 'store'), asNobody: true },
      { cmd: 'checkout', errno: 'EACCES', args: ['checkout', 'r', p('readonly-dir', 'co'), '--store', userStore], path: p('readonly-dir', 'co'), asNobody: true },
      { cmd: 'checkout', errno: 'EACCES', args: ['checkout', 'r', p('closed', 'inner', 'co'), '--store', userStore], path: p('closed', 'inner', 'co'), asNobody: true },
      { cmd: 'unpack', errno: 'EACCES', args: ['unpack', p('a.zip'), p('readonly-dir', 'un')], path: p('readonly-dir', 'un'), asNobody: true },
      { cmd: 'unpack', errno: 'EACCES', args: ['unpack', p('secret.zip'), p('..', 'never')], path: p('secret.zip'), asNobody: true },
      { cmd: 'import', errno: 'EACCES', args: ['import', p('secret.zip'), '--store', userStore], path: p('secret.zip'), asNobody: true },
      { cmd: 'pack', errno: 'EACCES', args: ['pack', p('src'), p('readonly-dir', 'o.zip'), '--store', userStore], path: p('readonly-dir', 'o.zip'), asNobody: true },
      { cmd: 'pack', errno: 'EACCES', args: ['pack', p('src-locked'), p('..', 'never.zip'), '--store', userStore], path: p('src-locked', 'hidden'), asNobody: true },
      { cmd: 'blob put', errno: 'EACCES', args: ['blob', 'put', p('secret'), '--store', userStore], path: p('secret'), asNobody: true },
      { cmd: 'blob put', errno: 'EACCES', args: ['blob', 'put', p('fresh'), ...S], path: store, asNobody: true },
      { cmd: 'ls', errno: 'EACCES', args: ['ls', 'r', '--store', p('closed', 'store')], path: p('closed', 'store'), asNobody: true },
      { cmd: 'gc', errno: 'EACCES', args: ['gc', '--grace', '0', ...S], path: store, asNobody: true },
      { cmd: 'verify', errno: 'EACCES', args: ['verify', '--store', p('closed', 'store')], path: p('closed', 'store'), asNobody: true },
      { cmd: 'pull', errno: 'EACCES', args: ['pull', tree2, server.url, '--store', p('readonly-dir', 'store')], path: p('readonly-dir', 'store'), asNobody: true },
      { cmd: 'push', errno: 'EACCES', args: ['push', p('src-locked'), server.url, '--store', userStore], path: p('src-locked', 'hidden'), asNobody: true },
      // ENOSPC on a 256 KiB tmpfs (each case starts with it empty)
      { cmd: 'checkout', errno: 'ENOSPC', args: ['checkout', 'r', p('small', 'co'), ...S], path: p('small', 'co') },
      { cmd: 'unpack', errno: 'ENOSPC', args: ['unpack', p('a.zip'), p('small', 'un')], path: p('small', 'un') },
      { cmd: 'pack', errno: 'ENOSPC', args: ['pack', p('src'), p('small', 'o.zip'), ...S], path: p('small', 'o.zip') },
      // Through a compressor: it meets the full disk, pack's next write only its closed pipe.
      { cmd: 'pack', errno: 'ENOSPC', args: ['pack', p('src'), p('small', 'o.tar.zst'), ...S], path: p('small', 'o.tar.zst') },
      { cmd: 'pack', errno: 'ENOSPC', args: ['pack', p('src'), p('small', 'o.tar.gz'), ...S], path: p('small', 'o.tar.gz') },
      { cmd: 'snapshot', errno: 'ENOSPC', args: ['snapshot', p('src'), '--store', p('small', 'st')], path: p('small', 'st') },
      { cmd: 'blob put', errno: 'ENOSPC', args: ['blob', 'put', p('src', 'big'), '--store', p('small', 'st')], path: p('small', 'st') },
      { cmd: 'import', errno: 'ENOSPC', args: ['import', p('a.zip'), '--store', p('small', 'st')], path: p('small', 'st') },
      { cmd: 'pull', errno: 'ENOSPC', args: ['pull', tree2, server.url, '--store', p('small', 'st')], path: p('small', 'st') },
      // EROFS on read-only tmpfs mounts
      { cmd: 'checkout', errno: 'EROFS', args: ['checkout', 'r', p('ro', 'co'), ...S], path: p('ro', 'co') },
      { cmd: 'unpack', errno: 'EROFS', args: ['unpack', p('a.zip'), p('ro', 'un')], path: p('ro', 'un') },
      { cmd: 'pack', errno: 'EROFS', args: ['pack', p('src'), p('ro', 'o.zip'), ...S], path: p('ro', 'o.zip') },
      { cmd: 'snapshot', errno: 'EROFS', args: ['snapshot', p('src'), '--store', p('ro', 'st')], path: p('ro', 'st') },
      { cmd: 'snapshot', errno: 'EROFS', args: ['snapshot', p('fresh-dir'), '--store', roStore], path: roStore },
      { cmd: 'blob put', errno: 'EROFS', args: ['blob', 'put', p('src2', 'h'), '--store', p('ro', 'st')], path: p('ro', 'st') },
      { cmd: 'import', errno: 'EROFS', args: ['import', p('a.zip'), '--store', p('ro', 'st')], path: p('ro', 'st') },
      { cmd: 'gc', errno: 'EROFS', args: ['gc', '--grace', '0', '--store', roStore], path: roStore },
      { cmd: 'verify', errno: 'EROFS', args: ['verify', '--repair', '--store', roStore], path: roStore },
      { cmd: 'pull', errno: 'EROFS', args: ['pull', tree2, server.url, '--store', roStore], path: roStore },
    ];

    const failures: string[] = [];
    const check = async (c: Case, json: boolean) => {
      const r = await run(json ? [...c.args, '--json'] : c.args, c.asNobody === true, c.asNobody ? userStore : p('default-store'));
        const what = `${c.cmd} (${c.errno}${json ? ', --json' : ''}): ${c.args.join(' ')}\n  exit ${r.code}\n  ${r.err.trim()}`;
        const expected = c.code ?? 7;
        if (r.code !== expected) failures.push(`expected exit ${expected}: ${what}`);
        else if (/internal error|\n\s+at /.test(r.err)) failures.push(`internal error or stack trace: ${what}`);
        else if (!/^treecast: error\[ERR_TREECAST_[A-Z_]+\]: /m.test(r.err)) failures.push(`no coded error: ${what}`);
        else if (!r.err.includes(c.path)) failures.push(`message does not name ${c.path}: ${what}`);
        else if (c.errno === 'ENOSPC' && !r.err.includes('ENOSPC')) failures.push(`a full disk is not said to be one: ${what}`);
        else if (c.blocker && !r.err.includes(`${c.blocker} is not a directory`)) failures.push(`message does not name the parent ${c.blocker}: ${what}`);
        else if (json) {
          const body = JSON.parse(r.out.trim().split('\n').pop()!) as { ok: boolean; error: { code: string; message: string } };
          if (body.ok !== false || !/^ERR_TREECAST_/.test(body.error.code) || !body.error.message.includes(c.path)) failures.push(`bad --json error: ${what}\n  ${r.out}`);
        }
    };
    const runs = cases.flatMap((c) => (c.noJson || c.cmd === 'blob' || c.cmd === 'blob put' ? [false] : [false, true]).map((json) => ({ c, json })));
    // The tiny tmpfs is emptied before each run that uses it, so those run one at a time.
    for (const { c, json } of runs.filter((x) => x.c.path.startsWith(p('small')))) {
      for (const name of fs.readdirSync(p('small'))) fs.rmSync(p('small', name), { recursive: true, force: true });
      await check(c, json);
    }
    // The rest run in four lanes at once. Runs on one target share a lane and go one after another:
    // two at once would rightly meet the target lock (exit 9) instead of the error under test.
    // So do runs on the read-only store: gc rightly refuses (exit 9) while a snapshot or pull holds it.
    const laneKey = (c: Case) => (c.cmd === 'checkout' || c.cmd === 'unpack' ? c.args[2]! : c.args.includes(roStore) ? roStore : c.args.join('\0'));
    const lanes = new Map<string, typeof runs>();
    for (const x of runs.filter((r) => !r.c.path.startsWith(p('small')))) lanes.set(laneKey(x.c), [...(lanes.get(laneKey(x.c)) ?? []), x]);
    const laneList = [...lanes.values()];
    await Promise.all([0, 1, 2, 3].map(async (w) => {
      for (let i = w; i < laneList.length; i += 4) for (const x of laneList[i]!) await check(x.c, x.json);
    }));
    assert.deepEqual(failures, [], `${failures.length} of ${runs.length} runs failed:\n${failures.join('\n')}`);
    // No refused run left anything behind where it was refused.
    assert.deepEqual(fs.readdirSync(p('readonly-dir')), []);
    assert.deepEqual(fs.readdirSync(p('ro')), []);
    assert.equal(fs.readFileSync(p('afile'), 'utf8'), 'a file');
  } finally {
    await server.close();
    for (const m of mounts.reverse()) execFileSync('umount', [m]);
  }
});
