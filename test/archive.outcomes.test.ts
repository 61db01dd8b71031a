/**
 * What unpack tells the user, the same for tar and zip: a clash between an archive entry and what
 * the target already holds is one exit code whichever way round it is (a file where the target has
 * a directory, or a directory where it has a file: exit 7, ERR_TREECAST_TARGET, as the README's
 * table says of a file in the way; only a symlink in the way is unsafe, exit 6), and the summary
 * counts the entries written, not those --strip-components dropped or a special file skipped.
 * Archives are made by GNU tar and Info-ZIP zip.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { tempDir } from './helpers/tmp.js';

const bin = new URL('../../bin/treecast', import.meta.url).pathname;

function tc(args: string[], store: string) {
  const r = spawnSync(process.execPath, [bin, ...args], { env: { ...process.env, TREECAST_STORE: store }, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function sh(cmd: string, args: string[], cwd: string): void {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
}

/** tar and zip of the tree at `dir/src`, holding `name` (a file or a directory), as GNU tar and Info-ZIP make them. */
function archives(dir: string, name: string): string[] {
  sh('tar', ['-cf', join(dir, 'a.tar'), name], join(dir, 'src'));
  sh('zip', ['-qry', join(dir, 'a.zip'), name], join(dir, 'src'));
  return [join(dir, 'a.tar'), join(dir, 'a.zip')];
}

/** Every path under `root`, relative, sorted: what an unpack wrote. */
function paths(root: string): string[] {
  return (fs.readdirSync(root, { recursive: true }) as string[]).sort();
}

test('a clash with what the target holds has one exit code for tar and zip, either way round, with or without --force', () => {
  const dir = tempDir('tc-clash');
  const store = join(dir, 'store');
  // The archive has a file 'x/f' and a directory 'y'.
  fs.mkdirSync(join(dir, 'src', 'x'), { recursive: true });
  fs.mkdirSync(join(dir, 'src', 'y'));
  fs.writeFileSync(join(dir, 'src', 'x', 'f'), 'archive\n');
  fs.writeFileSync(join(dir, 'src', 'y', 'g'), 'archive\n');
  const [tar, zip] = archives(dir, '.');
  const cases = [
    { what: 'a file where the target has a directory', make: (t: string) => fs.mkdirSync(join(t, 'x', 'f', 'mine'), { recursive: true }), kept: join('x', 'f', 'mine') },
    { what: 'a directory where the target has a file', make: (t: string) => fs.writeFileSync(join(t, 'y'), 'mine\n'), kept: 'y' },
  ];
  for (const c of cases) {
    for (const archive of [tar!, zip!]) {
      for (const force of [[], ['--force']]) {
        const target = join(dir, 'out');
        fs.rmSync(target, { recursive: true, force: true });
        fs.mkdirSync(target);
        c.make(target);
        const before = paths(target);
        const r = tc(['unpack', archive, target, '--json', ...force], store);
        const how = `${c.what}, ${archive.slice(-3)} ${force.join('')}: ${r.err}`;
        assert.equal(r.code, 7, how);
        assert.equal(JSON.parse(r.out).error.code, 'ERR_TREECAST_TARGET', how);
        assert.deepEqual(paths(target), before, `nothing written, the user's ${c.kept} kept: ${how}`);
      }
    }
  }
  // A symlink in the way of an archive directory stays unsafe (exit 6) for both: never written through.
  for (const archive of [tar!, zip!]) {
    const target = join(dir, 'out');
    fs.rmSync(target, { recursive: true, force: true });
    fs.mkdirSync(join(dir, 'elsewhere'), { recursive: true });
    fs.mkdirSync(target);
    fs.symlinkSync(join(dir, 'elsewhere'), join(target, 'y'));
    const r = tc(['unpack', archive, target, '--json'], store);
    assert.equal(r.code, 6, r.err);
    assert.equal(JSON.parse(r.out).error.code, 'ERR_TREECAST_UNSAFE_PATH');
    assert.deepEqual(fs.readdirSync(join(dir, 'elsewhere')), []);
  }
});

test("unpack's and import's summary counts only the entries written, not those --strip-components dropped or a FIFO skipped", () => {
  const dir = tempDir('tc-summary');
  const store = join(dir, 'store');
  const top = join(dir, 'src', 'top', 'a');
  fs.mkdirSync(join(top, 'b'), { recursive: true });
  fs.writeFileSync(join(top, 'f'), 'one\n');
  fs.writeFileSync(join(top, 'b', 'g'), 'two\n');
  fs.symlinkSync('f', join(top, 'l'));
  sh('mkfifo', [join(top, 'fifo')], dir);
  const [tar] = archives(dir, 'top');
  // GNU tar wrote an entry for every directory, so each written entry is one path in the target.
  for (const n of [0, 1, 2, 3]) {
    const target = join(dir, `out-${n}`);
    const strip = n > 0 ? ['--strip-components', String(n)] : [];
    const r = tc(['unpack', tar!, target, '--json', ...strip], store);
    assert.equal(r.code, 0, r.err);
    const s = JSON.parse(r.out);
    const written = paths(target);
    assert.equal(s.entries, written.length, `--strip-components ${n}: ${r.out} against ${written.join(' ')}`);
    assert.equal(s.files + s.dirs + s.symlinks, written.length, r.out);
    const human = tc(['unpack', tar!, join(dir, `human-${n}`), ...strip], store);
    assert.match(human.err, new RegExp(`unpack: ${written.length} entries \\(`), human.err);
    const imported = tc(['import', tar!, '--json', ...strip], store);
    assert.equal(imported.code, 0, imported.err);
    assert.equal(JSON.parse(imported.out).entries, written.length, imported.out);
  }
});
