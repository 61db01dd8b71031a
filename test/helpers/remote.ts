/**
 * Helpers for the remote tests: temp folders, synthetic trees, comparing trees on disk, running the
 * CLI as a child process, and an in-process treecast server that records what it served.
 */
import * as fs from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalStore } from '../../src/store/local.js';
import { type AccessLogEntry, RemoteServer, type ServerOptions } from '../../src/remote/server.js';

export const BIN = fileURLToPath(new URL('../../../bin/treecast', import.meta.url));

export function tempDir(tag: string): string {
  return fs.mkdtempSync(join(tmpdir(), `tc-${tag}-`));
}

export function removeDir(p: string): void {
  fs.rmSync(p, { recursive: true, force: true });
}

/**
 * Writes a tree: `dirs` directories of `files` small files each (some shared contents, an empty
 * file, an executable, a symlink per directory) plus one large file when `bigBytes` is given.
 */
export function makeTree(root: string, dirs: number, files: number, bigBytes = 0): void {
  fs.mkdirSync(root, { recursive: true });
  for (let d = 0; d < dirs; d++) {
    const dir = join(root, `d${String(d).padStart(4, '0')}`, d % 3 === 0 ? 'deep/er' : '.');
    fs.mkdirSync(dir, { recursive: true });
    for (let f = 0; f < files; f++) {
      // Every tenth file repeats another directory's content: dedupe must hold.
      const body = f % 10 === 9 ? `shared ${f}\n` : `dir ${d} file ${f} ${'x'.repeat((d * 7 + f * 13) % 300)}\n`;
      fs.writeFileSync(join(dir, `f${f}.txt`), body);
    }
    fs.symlinkSync(`f0.txt`, join(dir, 'link'));
  }
  fs.writeFileSync(join(root, 'empty'), '');
  fs.writeFileSync(join(root, 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  if (bigBytes > 0) {
    const buf = Buffer.alloc(bigBytes);
    for (let i = 0; i < bigBytes; i += 4096) buf.writeUInt32LE((i * 2654435761) >>> 0, i);
    fs.writeFileSync(join(root, 'big.bin'), buf);
  }
}

/** A listing of a tree (type, mode bits that matter, content or link target), for equality checks. */
export function describeTree(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    const abs = rel ? join(root, rel) : root;
    for (const name of fs.readdirSync(abs).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(root, r);
      const st = fs.lstatSync(p);
      if (st.isSymbolicLink()) out.push(`L ${r} -> ${fs.readlinkSync(p)}`);
      else if (st.isDirectory()) {
        out.push(`D ${r}`);
        walk(r);
      } else out.push(`F ${r} ${st.mode & 0o100 ? 'x' : '-'} ${st.size} ${fs.readFileSync(p).toString('base64').slice(0, 64)}:${hashFile(p)}`);
    }
  };
  walk('');
  return out;
}

function hashFile(p: string): string {
  let h = 0;
  for (const b of fs.readFileSync(p)) h = (h * 31 + b) >>> 0;
  return h.toString(16);
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI; resolves when it exits. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  return waitExit(startCli(args, env));
}

export function startCli(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess & { out: { stdout: string; stderr: string } } {
  // No token from the environment unless the test gives one (an empty one is refused by serve).
  const { TREECAST_TOKEN: _unused, ...inherited } = process.env;
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...inherited, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  }) as ChildProcess & { out: { stdout: string; stderr: string } };
  child.out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (c) => (child.out.stdout += c));
  child.stderr!.on('data', (c) => (child.out.stderr += c));
  return child;
}

export function waitExit(child: ChildProcess & { out: { stdout: string; stderr: string } }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout: child.out.stdout, stderr: child.out.stderr }));
  });
}

/** The URL a `treecast serve --json` child prints on its first line; rejects if it exits first. */
export function servedUrl(child: ChildProcess & { out: { stdout: string; stderr: string } }): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', () => {
      if (child.out.stdout.includes('\n')) resolve((JSON.parse(child.out.stdout.split('\n')[0]!) as { url: string }).url);
    });
    child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${child.out.stderr}`)));
  });
}

/** Parses the one JSON line a --json command prints. */
export function json(r: RunResult): Record<string, unknown> {
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`not JSON (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
  }
}

export interface TestServer {
  server: RemoteServer;
  url: string;
  store: LocalStore;
  log: AccessLogEntry[];
  close(): Promise<void>;
}

/** A treecast server on a free loopback port over a store at `storeRoot`, logging every request. */
export async function startServer(storeRoot: string, opts: Partial<ServerOptions> = {}): Promise<TestServer> {
  const store = LocalStore.open(storeRoot);
  const log: AccessLogEntry[] = [];
  const server = new RemoteServer({ store, host: '127.0.0.1', port: 0, log: (e) => log.push(e), ...opts });
  const url = await server.listen();
  return { server, url, store, log, close: () => server.close() };
}

/** Hashes sent completely more than once, according to a server log. */
export function duplicateSends(log: AccessLogEntry[]): string[] {
  const seen = new Set<string>();
  const dup = new Set<string>();
  for (const e of log) for (const h of e.sent ?? []) (seen.has(h) ? dup : seen).add(h);
  return [...dup];
}

/** Partial writes left in a store: its tmp folder plus temp names inside the blob shards. */
export function leftoverTmp(storeRoot: string): string[] {
  const out = fs.readdirSync(join(storeRoot, 'tmp')).map((n) => `tmp/${n}`);
  for (const s of fs.readdirSync(join(storeRoot, 'cas'))) {
    for (const n of fs.readdirSync(join(storeRoot, 'cas', s))) if (n.startsWith('.')) out.push(`cas/${s}/${n}`);
  }
  return out;
}
