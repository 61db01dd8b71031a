/**
 * Shared output helpers: human lines on stderr/stdout, JSON for scripts, error rendering. Every
 * human line that can hold a name goes through `escapeControl` (see core/display.ts).
 */
import { ExitCode, FileSystemError, TreecastError, fsError } from '../errors.js';
import { escapeControl, escapeControlLines } from '../core/display.js';

export { escapeControl };

/**
 * Exit code when the reader of our output went away (`treecast ls | head -1`): 141, 128 + SIGPIPE,
 * what git's exit looks like to the shell. Nothing is printed.
 */
export const CLOSED_OUTPUT_EXIT = 141;

/** Prints a JSON document on stdout (one line), for `--json`. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/**
 * Any thrown value as the typed error the user sees: an OS error (errno code) that no command
 * wrapped becomes a FileSystemError naming its path; anything else is a bug and stays untyped.
 */
export function typedError(err: unknown): unknown {
  if (err instanceof TreecastError) return err;
  const e = err as NodeJS.ErrnoException & { dest?: string };
  if (e instanceof Error && typeof e.code === 'string' && /^E[A-Z0-9]+$/.test(e.code)) {
    const action = e.syscall ? `${e.syscall} failed on` : 'cannot use';
    return fsError(err, action, e.path ?? e.dest ?? (e.syscall === 'write' ? 'standard output' : 'an unnamed file'));
  }
  return err;
}

/** Names a command gives its standard output in errors (`pack DIR -` writes to '-'). */
const STDOUT_NAMES = new Set(['-', 'standard output', 'stdout']);

/**
 * Whether an error means our stdout or stderr reader went away: a raw EPIPE, or one a command
 * already typed while writing its standard output (pack to '-', also through its compressor).
 */
export function isClosedOutput(err: unknown): boolean {
  if (err instanceof FileSystemError) return err.syscallCode === 'EPIPE' && STDOUT_NAMES.has(err.path ?? '');
  return (err as NodeJS.ErrnoException)?.code === 'EPIPE';
}

/** Prints an error: one `treecast: error[CODE]: message` line plus hint, or JSON with --json. */
export function errorOutput(err: unknown, json: boolean): void {
  if (json) {
    const body = err instanceof TreecastError ? err.toJSON() : { code: 'ERR_TREECAST_INTERNAL', message: String((err as Error)?.message ?? err) };
    process.stdout.write(`${JSON.stringify({ ok: false, error: body })}\n`);
  }
  if (err instanceof TreecastError) {
    // A message made of lines (a list of paths or keys) prints as lines; each line is escaped on its
    // own, so a newline inside a name shows as \n rather than starting a line of its own.
    const message = err.messageLines.map((l) => escapeControl(l)).join('\n');
    process.stderr.write(`treecast: error[${err.code}]: ${message}\n`);
    if (err.hint) process.stderr.write(`  hint: ${escapeControl(err.hint)}\n`);
  } else {
    process.stderr.write(`treecast: internal error: ${escapeControlLines(String((err as Error)?.stack ?? err))}\n`);
  }
}

/** Prints a coded warning on stderr. */
export function warn(code: string, message: string): void {
  process.stderr.write(`treecast: warning[${code}]: ${escapeControl(message)}\n`);
}

let closedOutputExit: number = CLOSED_OUTPUT_EXIT;

/**
 * What goes to stdout from here on is help or the version (`treecast --help | head -1`): a reader
 * that goes away before all of it is read is no failure, so the exit is 0, still quiet, where a
 * command's output (`treecast ls REF | head -1`) exits 141.
 */
export function printingHelp(): void {
  closedOutputExit = ExitCode.ok;
}

/**
 * Makes a closed stdout or stderr end the command quietly (exit 141, as git; 0 for help, printingHelp), and any other error
 * writing them (a full disk under `> file`) a typed error (exit 7). Without this, Node reports an
 * unhandled 'error' event with a stack trace.
 */
export function handleOutputErrors(): void {
  const onError = (stream: string) => (err: NodeJS.ErrnoException) => {
    if (isClosedOutput(err)) process.exit(closedOutputExit);
    if (stream === 'stdout') errorOutput(fsError(err, 'cannot write', 'standard output'), false);
    process.exit(ExitCode.io);
  };
  process.stdout.on('error', onError('stdout'));
  process.stderr.on('error', onError('stderr'));
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
