/**
 * A small HTTP proxy on loopback for remote tests and benchmarks: adds a fixed delay to every
 * request, counts requests in flight, and injects faults (a status instead of the answer, or
 * corrupted bytes) chosen per request by a callback.
 */
import * as http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';

export type Fault = 'pass' | 'corrupt' | 'reorder' | { status: number };

export interface ProxyOptions {
  /** Upstream base, e.g. http://127.0.0.1:1234 */
  upstream: string;
  delayMs?: number;
  /** Extra delay for one request (ms), by its method, path and number. */
  delay?: (method: string, path: string, n: number) => number;
  /** Decides per request what happens to it (default: pass). */
  fault?: (method: string, path: string, n: number) => Fault;
}

export interface Proxy {
  url: string;
  inFlight: number;
  maxInFlight: number;
  requests: { method: string; path: string; status: number }[];
  close(): Promise<void>;
}

export async function startProxy(opts: ProxyOptions): Promise<Proxy> {
  const up = new URL(opts.upstream);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
  let n = 0;
  const state: Proxy = {
    url: '',
    inFlight: 0,
    maxInFlight: 0,
    requests: [],
    close: async () => {
      server.closeAllConnections();
      server.close();
      agent.destroy();
    },
  };
  const server = http.createServer(async (req, res) => {
    state.inFlight++;
    state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
    res.once('close', () => state.inFlight--);
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    const delay = opts.delay?.(method, path, n) ?? 0;
    const fault = opts.fault?.(method, path, n++) ?? 'pass';
    const record = { method, path, status: 0 };
    state.requests.push(record);
    // The body is read first so a delayed request still reaches the server whole.
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (opts.delayMs || delay) await new Promise((r) => setTimeout(r, (opts.delayMs ?? 0) + delay));
    if (typeof fault === 'object') {
      record.status = fault.status;
      res.writeHead(fault.status, { 'content-type': 'text/plain' });
      res.end('injected fault\n');
      return;
    }
    let body = Buffer.concat(chunks);
    // Reorder: a batch request's 40-byte digest records sent in reverse, so the server answers
    // them in an order the client did not ask for.
    if (fault === 'reorder') body = Buffer.concat(Array.from({ length: body.length / 40 }, (_, i) => body.subarray(i * 40, i * 40 + 40)).reverse());
    const headers = { ...req.headers, host: up.host };
    const preq = http.request({ host: up.hostname, port: up.port, method, path, headers, agent }, (pres) => {
      record.status = pres.statusCode ?? 0;
      if (fault !== 'corrupt') {
        res.writeHead(pres.statusCode ?? 502, pres.headers);
        pres.pipe(res);
        return;
      }
      // Corrupt: flip the last byte of the body, keeping its length.
      const parts: Buffer[] = [];
      pres.on('data', (c) => parts.push(c));
      pres.on('end', () => {
        const body = Buffer.concat(parts);
        if (body.length > 0) body[body.length - 1]! ^= 0xff;
        const h = { ...pres.headers, 'content-length': String(body.length) };
        delete h['transfer-encoding'];
        res.writeHead(pres.statusCode ?? 502, h);
        res.end(body);
      });
    });
    preq.on('error', () => res.destroy());
    preq.end(body);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}${up.pathname}`;
  return state;
}
