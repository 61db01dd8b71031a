/**
 * Names from trees, archives and the disk reach the terminal with control characters escaped
 * (C0, DEL, C1, invalid UTF-8), in listings, warnings and errors; `--json` keeps them exact.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { escapeControl } from '../src/core/display.js';
import { errorOutput } from '../src/cli/output.js';
import { LocalChangesError, RemoteRefNotFoundError, UsageError } from '../src/errors.js';
import { runCli, startServer } from './helpers/remote.js';
import { tempDir } from './helpers/tmp.js';
import { craftZip } from './helpers/zip-craft.js';

const bin = new URL('../../bin/treecast', import.meta.url).pathname;

function tc(args: string[], store: string) {
  const r = spawnSync(process.execPath, [bin, ...args], { env: { ...process.env, TREECAST_STORE: store }, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** Control characters other than the tab and newline a listing uses as separators. */
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;

function assertPrintable(text: string, what: string): void {
  const m = CONTROL.exec(text);
  assert.equal(m, null, `${what} holds U+${m?.[0].charCodeAt(0).toString(16).padStart(4, '0')}: ${JSON.stringify(text)}`);
}

// ESC sequences (colour, window title), a C1 CSI (U+009B), DEL, BEL, CR and a newline.
const HOSTILE = ['red\x1b[31mname', 'title\x1b]0;pwned\x07', 'csi\u009b2J', 'del\x7f', 'cr\rover', 'two\nlines'];

test('escapeControl: C0, DEL, C1, lone surrogates and invalid UTF-8 bytes are escaped; plain text is unchanged', () => {
  assert.equal(escapeControl('plain/ünïcode ✓ 😀'), 'plain/ünïcode ✓ 😀');
  assert.equal(escapeControl('a\x1b[31mb\tc\nd\re\x00f\x7fg'), 'a\\x1b[31mb\\tc\\nd\\re\\x00f\\x7fg');
  assert.equal(escapeControl('\u009b\u0085x'), '\\u009B\\u0085x');
  assert.equal(escapeControl('lone\ud800x\udc00'), 'lone\\uD800x\\uDC00');
  assert.equal(escapeControl(Buffer.from([0x61, 0xff, 0xc3, 0xa9, 0xc0, 0xaf, 0xed, 0xa0, 0x80, 0x1b])), 'a\\xffé\\xc0\\xaf\\xed\\xa0\\x80\\x1b');
  assert.equal(escapeControl(escapeControl('x\x1by')), 'x\\x1by', 'idempotent');
});

test('ls and diff escape hostile names and symlink targets; --json keeps them exact', () => {
  const dir = tempDir('tc-esc');
  const store = join(dir, 's');
  const a = join(dir, 'a');
  const b = join(dir, 'b');
  fs.mkdirSync(join(a, 'sub\x1b[2Jdir'), { recursive: true });
  fs.mkdirSync(b);
  for (const n of HOSTILE) {
    fs.writeFileSync(join(a, n), n);
    fs.writeFileSync(join(a, 'sub\x1b[2Jdir', n), n);
  }
  fs.symlinkSync('target\x1b[5m\u009b', join(a, 'link\x1b'));
  assert.equal(tc(['snapshot', a, '--ref', 'a'], store).code, 0);
  assert.equal(tc(['snapshot', b, '--ref', 'b'], store).code, 0);

  const ls = tc(['ls', 'a'], store);
  assert.equal(ls.code, 0, ls.err);
  assertPrintable(ls.out, 'ls');
  const lines = ls.out.trimEnd().split('\n');
  assert.equal(lines.length, 2 * HOSTILE.length + 2, 'one line per entry, whatever the names hold');
  assert.ok(lines.includes(`120000 symlink -> target\\x1b[5m\\u009B\tlink\\x1b`), ls.out);
  assert.ok(lines.some((l) => l.endsWith('\ttwo\\nlines')), ls.out);
  const json = JSON.parse(tc(['ls', 'a', '--json'], store).out) as { path: string; target?: string }[];
  assert.deepEqual(json.map((e) => e.path).filter((p) => !p.includes('/')).sort(), [...HOSTILE, 'link\x1b', 'sub\x1b[2Jdir'].sort());
  assert.equal(json.find((e) => e.target)?.target, 'target\x1b[5m\u009b');

  const diff = tc(['diff', 'b', 'a'], store);
  assert.equal(diff.code, 0, diff.err);
  assertPrintable(diff.out, 'diff');
  assert.equal(diff.out.trimEnd().split('\n').length, 2 * HOSTILE.length + 2);
  assert.ok(diff.out.includes('A\tsub\\x1b[2Jdir/\n'), diff.out);
  assert.deepEqual((JSON.parse(tc(['diff', 'b', 'a', '--json'], store).out) as { path: string }[]).map((c) => c.path).filter((p) => p.startsWith('title')), ['title\x1b]0;pwned\x07']);

  // An error naming a path from the command line and the tree.
  const sub = tc(['ls', 'a', 'no\x1b[31mdir'], store);
  assert.equal(sub.code, 3);
  assertPrintable(sub.err, 'error');
  assert.match(sub.err, /no\\x1b\[31mdir/);
});

test('checkout lists local changes with hostile names escaped, one per line; --json keeps them exact', () => {
  const dir = tempDir('tc-esc');
  const store = join(dir, 's');
  fs.mkdirSync(join(dir, 'v1'));
  fs.mkdirSync(join(dir, 'v2'));
  for (const n of HOSTILE) {
    fs.writeFileSync(join(dir, 'v1', n), 'one');
    fs.writeFileSync(join(dir, 'v2', n), 'two');
  }
  tc(['snapshot', join(dir, 'v1'), '--ref', 'v1'], store);
  tc(['snapshot', join(dir, 'v2'), '--ref', 'v2'], store);
  const out = join(dir, 'out');
  assert.equal(tc(['checkout', 'v1', out], store).code, 0);
  for (const n of HOSTILE) fs.writeFileSync(join(out, n), 'mine');
  const r = tc(['checkout', 'v2', out], store);
  assert.equal(r.code, 4, r.err);
  assertPrintable(r.err, 'local changes');
  for (const n of HOSTILE) assert.ok(r.err.includes(`\n  ${escapeControl(n)}`), `${JSON.stringify(n)} listed escaped on its own line: ${r.err}`);
  const j = tc(['checkout', 'v2', out, '--json'], store);
  assert.deepEqual((JSON.parse(j.out).error.paths as string[]).sort(), [...HOSTILE].sort());
});

test('unpack errors and warnings escape entry names, including names that are not UTF-8', () => {
  const dir = tempDir('tc-esc');
  const store = join(dir, 's');
  const zip = join(dir, 'a.zip');
  // Refused: an entry that climbs out, named with a title-setting sequence.
  fs.writeFileSync(zip, craftZip([{ name: 'x\x1b]0;pwned\x07/../../../evil', data: 'x' }]));
  const r = tc(['unpack', zip, join(dir, 'out')], store);
  assert.equal(r.code, 6);
  assertPrintable(r.err, 'unpack error');
  assert.match(r.err, /x\\x1b\]0;pwned\\x07\/\.\.\/\.\.\/\.\.\/evil/);
  const j = tc(['unpack', zip, join(dir, 'out'), '--json'], store);
  assert.ok((JSON.parse(j.out).error.message as string).includes('x\x1b]0;pwned\x07/'), 'JSON keeps the exact name');

  // A warning (setuid bit stripped) naming a hostile entry.
  fs.writeFileSync(zip, craftZip([{ name: 'suid\x1b[8m\u009b', data: 'x', mode: 0o104755 }]));
  const w = tc(['unpack', zip, join(dir, 'out2')], store);
  assert.equal(w.code, 0, w.err);
  assertPrintable(w.err, 'warning');
  assert.match(w.err, /warning\[ARCHIVE_MODE_STRIPPED\]: 'suid\\x1b\[8m\\u009B'/);

  // A name that is not valid UTF-8 (0x9b alone is CSI in Latin-1 terminals): shown as \x9b.
  // 'ÿ' is two bytes in UTF-8 (c3 bf); replace them, in the local and the central name, with 9b ff.
  const bad = craftZip([{ name: 'bad\u00ffname', data: 'x' }]);
  for (let at = bad.indexOf('bad\u00ffname'); at >= 0; at = bad.indexOf('bad\u00ffname', at + 1)) bad.set([0x9b, 0xff], at + 3);
  fs.writeFileSync(zip, bad);
  const u = tc(['unpack', zip, join(dir, 'out3')], store);
  assert.equal(u.code, 6, u.err);
  assertPrintable(u.err, 'invalid UTF-8 name');
  assert.match(u.err, /bad\\x9b\\xffname/);
});

test('snapshot warnings about skipped special files escape the name', () => {
  const dir = tempDir('tc-esc');
  const store = join(dir, 's');
  fs.mkdirSync(join(dir, 'src'));
  const fifo = spawnSync('mkfifo', [join(dir, 'src', 'fifo\x1b[31m\u009b')]);
  assert.equal(fifo.status, 0);
  const r = tc(['snapshot', join(dir, 'src')], store);
  assert.equal(r.code, 0, r.err);
  assertPrintable(r.err, 'snapshot warning');
  assert.match(r.err, /fifo\\x1b\[31m\\u009B/);
});

test('an error whose message is a list prints one line per item, each escaped; a newline inside a name stays \\n', () => {
  const printed = (err: unknown): string => {
    let text = '';
    const write = process.stderr.write;
    process.stderr.write = ((chunk: string) => ((text += chunk), true)) as typeof process.stderr.write;
    try {
      errorOutput(err, false);
    } finally {
      process.stderr.write = write;
    }
    return text;
  };
  const refs = printed(new RemoteRefNotFoundError([{ name: 'deps\nx\x1b[2J', key: 'k1', reason: 'absent' }, { name: 'tools', key: 'k2', reason: 'incomplete' }], 'http://127.0.0.1:1/'));
  assertPrintable(refs, 'ref miss');
  assert.deepEqual(refs.split('\n').slice(0, 3), [
    "treecast: error[ERR_TREECAST_REMOTE_REF_NOT_FOUND]: no ref of 'deps\\nx\\x1b[2J', 'tools' on http://127.0.0.1:1/:",
    '  deps\\nx\\x1b[2J (ac/k1): no entry',
    '  tools (ac/k2): entry names blobs the server lacks',
  ]);
  const local = printed(new LocalChangesError(['a', 'two\nlines']));
  assert.deepEqual(local.split('\n').slice(0, 3), ['treecast: error[ERR_TREECAST_LOCAL_CHANGES]: checkout would overwrite 2 locally changed path(s):', '  a', '  two\\nlines']);
  // A one-line message with a newline in a name it quotes is still one line.
  assert.equal(printed(new UsageError("no ref 'a\nb'")).split('\n')[0], "treecast: error[ERR_TREECAST_USAGE]: no ref 'a\\nb'");
});

test('checkout of a ref the remote lacks lists the keys tried on lines of their own', async () => {
  const dir = tempDir('tc-esc');
  const server = await startServer(join(dir, 'served'));
  try {
    const r = await runCli(['checkout', 'deps-x', join(dir, 'out'), '--remote', server.url, '--fallback', 'deps-y', '--store', join(dir, 's')]);
    assert.equal(r.code, 3, r.stderr);
    const lines = r.stderr.split('\n');
    assert.match(lines[0]!, /^treecast: error\[ERR_TREECAST_REMOTE_REF_NOT_FOUND\]: no ref of 'deps-x', 'deps-y' on .*:$/);
    assert.match(lines[1]!, /^ {2}deps-x \(ac\/[0-9a-f]+\): no entry$/);
    assert.match(lines[2]!, /^ {2}deps-y \(ac\/[0-9a-f]+\): no entry$/);
    assert.ok(!r.stderr.includes('\\n'), r.stderr);
    assert.ok(!fs.existsSync(join(dir, 'out')));
  } finally {
    await server.close();
  }
});
