/**
 * Real clients against `treecast serve`: Bazel (Debian's bazel-bootstrap, 4.x) as
 * `--remote_cache`, with and without the batch endpoints, and ccache (4.7) with `layout=bazel`
 * against `--no-ac-validation`. A second build on an empty local cache must be served entirely by
 * the remote cache. Bazel runs offline: no rc files, no external repositories, genrules and a
 * Starlark rule with a directory output (so its ActionResult carries an OutputDirectory and a
 * Tree), an output root in the test's temp folder, `--batch` so no server outlives the test.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { removeDir, startServer, tempDir, type TestServer } from './helpers/remote.js';

const BAZEL = '/usr/bin/bazel';
const CCACHE = '/usr/bin/ccache';
/** Debian's bazel-bootstrap keeps its install base here (its /etc/bazel/bazelrc names it). */
const DEBIAN_INSTALL_BASE = '/usr/share/bazel';

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command without blocking the event loop (the server under test runs in this process). */
function run(cmd: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number }): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const WORKSPACE_FILES: Record<string, string> = {
  WORKSPACE: 'workspace(name = "tc")\n',
  'defs.bzl': `
def _tree_impl(ctx):
    out = ctx.actions.declare_directory(ctx.attr.name + "_tree")
    ctx.actions.run_shell(
        outputs = [out],
        command = "mkdir -p {d}/sub/deeper && echo one > {d}/a.txt && echo two > {d}/sub/b.txt && printf '' > {d}/sub/deeper/empty".format(d = out.path),
    )
    return [DefaultInfo(files = depset([out]))]

tree_output = rule(implementation = _tree_impl)
`,
  BUILD: `
load(":defs.bzl", "tree_output")

genrule(name = "hello", outs = ["hello.txt"], cmd = "echo hello from genrule > $@")
genrule(name = "twice", srcs = [":hello"], outs = ["twice.txt"], cmd = "cat $< $< > $@; echo to stderr >&2")
genrule(name = "big", outs = ["big.bin"], cmd = "head -c 3000000 /dev/zero | tr '\\\\0' 'z' > $@")
genrule(name = "tool", outs = ["tool.sh"], cmd = "printf '#!/bin/sh\\\\necho tool\\\\n' > $@", executable = True)
tree_output(name = "gen")
`,
  'src.txt': 'a source file\n',
};

/** "INFO: 6 processes: 1 internal, 5 remote cache hit." -> { total: 6, kinds: { internal: 1, 'remote cache hit': 5 } } */
function processesLine(out: string): { total: number; kinds: Record<string, number> } | undefined {
  const m = /INFO: (\d+) process(?:es)?(?:: ([^\n]*?))?\.?\n/.exec(out);
  if (!m) return undefined;
  const kinds: Record<string, number> = {};
  for (const part of (m[2] ?? '').split(', ')) {
    const k = /^(\d+) (.+)$/.exec(part.trim());
    if (k) kinds[k[2]!] = Number(k[1]);
  }
  return { total: Number(m[1]), kinds };
}

describe('real clients', () => {
  let dir: string;
  before(() => {
    dir = tempDir('clients');
  });
  after(() => removeDir(dir));

  for (const batch of [true, false]) {
    test(`Bazel: after clean --expunge, every action is a remote cache hit (serve${batch ? '' : ' --no-batch'})`, async (t) => {
      if (!fs.existsSync(BAZEL)) {
        if (process.getuid?.() === 0) assert.fail(`${BAZEL} is missing: .ci/run installs bazel-bootstrap`);
        return t.skip(`${BAZEL} is not installed (Debian package bazel-bootstrap)`);
      }
      const base = join(dir, `bazel-${batch ? 'batch' : 'plain'}`);
      const ws = join(base, 'ws');
      fs.mkdirSync(ws, { recursive: true });
      for (const [name, text] of Object.entries(WORKSPACE_FILES)) fs.writeFileSync(join(ws, name), text);
      const srv: TestServer = await startServer(join(base, 'store'), { batch });
      try {
        const startup = ['--nosystem_rc', '--nohome_rc', '--batch', `--output_user_root=${join(base, 'root')}`];
        if (fs.existsSync(join(DEBIAN_INSTALL_BASE, 'A-server.jar'))) startup.push(`--install_base=${DEBIAN_INSTALL_BASE}`, '--trust_install_base');
        const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: base, TMPDIR: base, LANG: 'C.UTF-8' };
        const bazel = (...args: string[]) => run(BAZEL, [...startup, ...args], { cwd: ws, env, timeoutMs: 300_000 });
        const build = ['build', `--remote_cache=${srv.url}`, '--noshow_progress', '--color=no', '--curses=no', '//...'];

        const first = await bazel(...build);
        assert.equal(first.code, 0, `first build failed:\n${first.stderr}`);
        const firstLine = processesLine(first.stderr);
        assert.ok(firstLine && !firstLine.kinds['remote cache hit'], `the first build runs its actions: ${JSON.stringify(firstLine)}`);
        const acPuts = srv.log.filter((e) => e.method === 'PUT' && /\/ac\//.test(e.path));
        assert.ok(acPuts.length >= 5, `Bazel stored an action result per action (${acPuts.length})`);
        assert.ok(acPuts.every((e) => e.status === 200), 'every ActionResult Bazel wrote passed validation');

        assert.equal((await bazel('clean', '--expunge')).code, 0);
        const second = await bazel(...build);
        assert.equal(second.code, 0, `rebuild failed:\n${second.stderr}`);
        const line = processesLine(second.stderr);
        assert.ok(line, `no processes line in:\n${second.stderr}`);
        const executed = line.total - (line.kinds.internal ?? 0);
        assert.ok(executed >= 5, `${executed} actions`);
        assert.equal(line.kinds['remote cache hit'], executed, `every action is a remote cache hit: ${JSON.stringify(line)}`);
        // The outputs came back whole, the directory output included.
        const bin = join(ws, 'bazel-bin');
        assert.equal(fs.readFileSync(join(bin, 'twice.txt'), 'utf8'), 'hello from genrule\nhello from genrule\n');
        assert.equal(fs.statSync(join(bin, 'big.bin')).size, 3_000_000);
        assert.equal(fs.readFileSync(join(bin, 'gen_tree', 'sub', 'b.txt'), 'utf8'), 'two\n');
        assert.equal(fs.statSync(join(bin, 'gen_tree', 'sub', 'deeper', 'empty')).size, 0);
        const acGets = srv.log.filter((e) => e.method === 'GET' && /\/ac\//.test(e.path) && e.status === 200);
        assert.ok(acGets.length >= executed, 'the hits were served from /ac/');
      } finally {
        await srv.close();
        // Batch mode leaves no Bazel server running; the output root holds read-only files.
        await run('chmod', ['-R', 'u+w', base], { cwd: dir, env: process.env, timeoutMs: 60_000 });
      }
    });
  }

  test('ccache: a second build with an empty local cache is all remote hits (serve --no-ac-validation)', async (t) => {
    if (!fs.existsSync(CCACHE)) {
      if (process.getuid?.() === 0) assert.fail(`${CCACHE} is missing: .ci/run installs ccache`);
      return t.skip(`${CCACHE} is not installed (Debian package ccache)`);
    }
    const base = join(dir, 'ccache');
    const src = join(base, 'src');
    fs.mkdirSync(src, { recursive: true });
    const files = Array.from({ length: 6 }, (_, i) => `unit${i}.c`);
    for (const [i, f] of files.entries()) fs.writeFileSync(join(src, f), `#include <stdio.h>\nint unit${i}(void) { printf("unit ${i}\\n"); return ${i}; }\n`);
    const srv = await startServer(join(base, 'store'), { acValidation: false });
    const validating = await startServer(join(base, 'validating'));
    try {
      const buildWith = async (cacheDir: string, url: string) => {
        const env = {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          HOME: base,
          CCACHE_DIR: cacheDir,
          CCACHE_REMOTE_STORAGE: `${url}ccache|layout=bazel`,
          CCACHE_NOHASHDIR: '1',
        };
        for (const f of files) {
          const r = await run(CCACHE, ['cc', '-c', f, '-o', f.replace('.c', '.o')], { cwd: src, env, timeoutMs: 60_000 });
          assert.equal(r.code, 0, r.stderr);
        }
        const stats = await run(CCACHE, ['--print-stats'], { cwd: src, env, timeoutMs: 60_000 });
        return Object.fromEntries(stats.stdout.trim().split('\n').map((l) => l.split('\t')).map(([k, v]) => [k!, Number(v)]));
      };
      const first = await buildWith(join(base, 'cache1'), srv.url);
      assert.equal(first.remote_storage_hit, 0);
      assert.ok(first.remote_storage_write! >= files.length, `first build wrote to the remote: ${JSON.stringify(first)}`);
      const second = await buildWith(join(base, 'cache2'), srv.url);
      assert.equal(second.remote_storage_hit, files.length, `all remote hits: ${JSON.stringify(second)}`);
      assert.equal(second.cache_miss, 0);
      assert.equal(second.remote_storage_error, 0);
      assert.ok(srv.log.some((e) => e.method === 'PUT' && e.path.startsWith('/ccache/ac/') && e.status === 200));

      // ccache's own format is not an ActionResult: a validating server refuses it, and nothing is stored there.
      const refused = await buildWith(join(base, 'cache3'), validating.url);
      assert.equal(refused.remote_storage_hit, 0);
      assert.ok(validating.log.some((e) => e.method === 'PUT' && e.path.startsWith('/ccache/ac/') && e.status === 400));
      assert.ok(!fs.existsSync(join(validating.store.root, 'ac')) || fs.readdirSync(join(validating.store.root, 'ac')).length === 0);
    } finally {
      await srv.close();
      await validating.close();
    }
  });
});
