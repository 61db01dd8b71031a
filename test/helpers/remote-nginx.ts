/**
 * Starts nginx as a WebDAV cache the way Bazel documents it (`dav_methods PUT;
 * create_full_put_path on;`), on a free loopback port with its own prefix, config, pid and logs,
 * in the foreground so the test owns exactly one process tree and stops only that.
 */
import * as fs from 'node:fs';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import { join } from 'node:path';

export interface Nginx {
  url: string;
  root: string;
  accessLog: string;
  stop(): Promise<void>;
}

/** The nginx binary, or undefined when it is not installed. */
export function findNginx(): string | undefined {
  for (const p of ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/bin/nginx']) if (fs.existsSync(p)) return p;
  const r = spawnSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() ? r.stdout.trim() : undefined;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, '127.0.0.1');
  await new Promise((r) => s.once('listening', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function waitForPort(port: number, child: ChildProcess, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`nginx exited with code ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, '127.0.0.1');
      c.once('connect', () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('nginx did not start listening');
}

export async function startNginx(nginx: string, prefix: string): Promise<Nginx> {
  const root = join(prefix, 'cache');
  for (const d of [root, join(prefix, 'tmp'), join(prefix, 'logs')]) fs.mkdirSync(d, { recursive: true });
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const conf = join(prefix, 'nginx.conf');
    fs.writeFileSync(
      conf,
      `${process.getuid?.() === 0 ? 'user root root;\n' : ''}worker_processes 1;
daemon off;
pid ${prefix}/nginx.pid;
error_log ${prefix}/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log ${prefix}/logs/access.log;
  client_body_temp_path ${prefix}/tmp/body;
  proxy_temp_path ${prefix}/tmp/proxy;
  fastcgi_temp_path ${prefix}/tmp/fastcgi;
  uwsgi_temp_path ${prefix}/tmp/uwsgi;
  scgi_temp_path ${prefix}/tmp/scgi;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:${port};
    location / {
      root ${root};
      dav_methods PUT;
      create_full_put_path on;
      dav_access user:rw group:rw all:r;
      client_max_body_size 0;
    }
  }
}
`,
    );
    const child = spawn(nginx, ['-p', prefix, '-c', conf, '-e', join(prefix, 'logs', 'error.log')], { stdio: 'ignore' });
    try {
      await waitForPort(port, child, 5_000);
    } catch (e) {
      lastError = e;
      if (child.exitCode === null) child.kill('SIGTERM');
      continue;
    }
    return {
      url: `http://127.0.0.1:${port}/`,
      root,
      accessLog: join(prefix, 'logs', 'access.log'),
      stop: async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((r) => child.once('exit', r));
        // SIGTERM to the master we started: fast shutdown of it and its workers.
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(t);
      },
    };
  }
  let log = '';
  try {
    log = fs.readFileSync(join(prefix, 'logs', 'error.log'), 'utf8');
  } catch {
    /* no log */
  }
  throw new Error(`cannot start nginx: ${(lastError as Error)?.message}\n${log}`);
}
