/** Shared output helpers: human lines on stderr/stdout, JSON for scripts, error rendering. */
import { TreecastError } from '../errors.js';

/** Prints a JSON document on stdout (one line), for `--json`. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** Prints an error: one `treecast: error[CODE]: message` line plus hint, or JSON with --json. */
export function errorOutput(err: unknown, json: boolean): void {
  if (json) {
    const body = err instanceof TreecastError ? err.toJSON() : { code: 'ERR_TREECAST_INTERNAL', message: String((err as Error)?.message ?? err) };
    process.stdout.write(`${JSON.stringify({ ok: false, error: body })}\n`);
  }
  if (err instanceof TreecastError) {
    process.stderr.write(`treecast: error[${err.code}]: ${err.message}\n`);
    if (err.hint) process.stderr.write(`  hint: ${err.hint}\n`);
  } else {
    process.stderr.write(`treecast: internal error: ${(err as Error)?.stack ?? err}\n`);
  }
}

/** Prints a coded warning on stderr. */
export function warn(code: string, message: string): void {
  process.stderr.write(`treecast: warning[${code}]: ${message}\n`);
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
