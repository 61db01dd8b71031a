/**
 * The `treecast` command: argv -> options -> library calls. Each command lives in its own file
 * under commands/ and registers itself on the program; this file only wires them and maps errors
 * to exit codes.
 */
import { Command, CommanderError } from 'commander';
import { ExitCode, TreecastError, UsageError } from '../errors.js';
import { commandsFor } from './commands/index.js';
import { VERSION } from '../version.js';
import { CLOSED_OUTPUT_EXIT, errorOutput, handleOutputErrors, isClosedOutput, printJson, printingHelp, typedError } from './output.js';
import { escapeControl, escapeControlLines } from '../core/display.js';
import * as fs from 'node:fs';
import { isUtf8Bytes } from '../fs/byte-names.js';

export async function buildProgram(argv: readonly string[] = process.argv): Promise<Command> {
  const program = new Command('treecast')
    .description('Capture file trees into a content-addressed store and materialize them anywhere.')
    .version(VERSION, '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({
      writeErr: (s) => process.stderr.write(escapeControlLines(s)),
      // Commander writes only help and the version to stdout: a reader gone is exit 0 for them.
      writeOut: (s) => {
        printingHelp();
        process.stdout.write(s);
      },
    });
  program.addHelpText(
    'after',
    `
Exit codes:
  0    success
  1    unexpected failure
  2    bad arguments or options (also malformed digests and ref names, and empty values)
  3    digest or ref not found, or a path not in the tree (ls REF PATH)
  4    checkout stopped: local changes would be overwritten (see --force), or untracked files
       in a folder where the tree has a file would be removed (see --clean)
  5    integrity: a blob's bytes do not match its digest
  6    unsafe or malformed input refused (tree, archive, special file with --strict)
  7    file-system error, naming the path (missing, not a directory, is a directory, permission
       denied, exists, disk full, read-only file system)
  8    remote server error
  9    the target directory is in use by another treecast process (its pid is named)
  130  interrupted (SIGINT/SIGTERM); run the same command again to finish
  141  the reader of the output went away (treecast ls | head -1); nothing is printed, as git does
       (help and --version exit 0 then)

Environment:
  TREECAST_STORE   store location (default $XDG_CACHE_HOME/treecast or ~/.cache/treecast)
  TREECAST_TOKEN   bearer token for remote commands`,
  );
  for (const register of await commandsFor(argv)) register(program);
  program.hook('preAction', (_program, action) => {
    refuseEmptyValues(action);
    if (argv === process.argv) refuseLossyArguments(argv);
  });
  return program;
}

/**
 * An empty argument or option value is refused (exit 2) before any command runs. It is what an
 * unset shell variable gives (`treecast checkout X "$DIR" --force --clean`), and as a path it would
 * otherwise mean the current directory.
 */
function refuseEmptyValues(cmd: Command): void {
  const hint = 'an empty string names no path, digest or name: is a shell variable unset?';
  cmd.registeredArguments.forEach((arg, i) => {
    const v: unknown = cmd.processedArgs[i];
    if (v === '' || (Array.isArray(v) && v.includes(''))) throw new UsageError(`the ${arg.name().toUpperCase()} argument is empty`, { hint });
  });
  for (const [key, v] of Object.entries(cmd.opts())) {
    if (v !== '' && !(Array.isArray(v) && v.includes(''))) continue;
    const flag = cmd.options.find((o) => o.attributeName() === key)?.long ?? key;
    throw new UsageError(`the value of ${flag} is empty`, { hint });
  }
}

/**
 * Node decodes an argument that is not UTF-8 lossily (U+FFFD for the bad bytes), so a path given
 * that way would name another file (`checkout X $'out\xff'` would write into 'out\uFFFD'). The raw
 * bytes are in /proc/self/cmdline (Linux; elsewhere nothing is checked): an argument whose bytes are
 * not UTF-8 is refused, a real U+FFFD is not, nor an --exclude glob (names are read the same way).
 */
function refuseLossyArguments(argv: readonly string[]): void {
  const given = argv.slice(2);
  if (!given.some((a) => a.includes('\ufffd'))) return;
  let raw: Buffer;
  try {
    raw = fs.readFileSync('/proc/self/cmdline');
  } catch {
    return;
  }
  const parts: Buffer[] = [];
  for (let start = 0; start < raw.length; ) {
    const end = raw.indexOf(0, start);
    parts.push(raw.subarray(start, end < 0 ? raw.length : end));
    start = end < 0 ? raw.length : end + 1;
  }
  const rawGiven = parts.slice(-given.length);
  for (let i = 0; i < rawGiven.length; i++) {
    const bytes = rawGiven[i]!;
    if (isUtf8Bytes(bytes)) continue;
    // An --exclude glob is matched against names read the same lossy way, so it still matches.
    if (given[i - 1] === '--exclude' || given[i]!.startsWith('--exclude=')) continue;
    throw new UsageError(`the argument '${escapeControl(bytes)}' is not valid UTF-8: treecast would read it as '${bytes.toString('utf8')}', another name`, {
      hint: 'rename the path (for example with convmv), or reach it through a folder or symlink whose name is UTF-8',
    });
  }
}

/** Runs the CLI and returns the exit code (never calls process.exit, so output is flushed). */
export async function main(argv: string[]): Promise<number> {
  handleOutputErrors();
  const program = await buildProgram(argv);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : ExitCode.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return ExitCode.ok;
      // `help` asked for is success; the help printed for a missing command (`treecast`, `treecast blob`) is a usage error.
      if (err.code === 'commander.help') return err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
      // Commander printed its message on stderr; a script asking for --json gets the error as JSON too.
      if (argv.includes('--json')) printJson({ ok: false, error: new UsageError(err.message.replace(/^error: /, '')).toJSON() });
      return ExitCode.usage;
    }
    if (isClosedOutput(err)) return CLOSED_OUTPUT_EXIT;
    const typed = typedError(err);
    errorOutput(typed, process.argv.includes('--json'));
    return typed instanceof TreecastError ? typed.exitCode : ExitCode.failure;
  }
}
