/**
 * Every command of the CLI, in the order `--help` lists them. Each file registers one or a few.
 *
 * Perf: a command file is imported only when its command runs (all of them for help), so
 * `treecast checkout` does not load the HTTP client or the zip code: importing everything cost
 * ~0.2 s of start-up, as much as a small checkout.
 */
import type { Command } from 'commander';

type Register = (program: Command) => void;

const table: [names: readonly string[], load: () => Promise<Register>][] = [
  [['snapshot'], async () => (await import('./snapshot.js')).registerSnapshot],
  [['checkout'], async () => (await import('./checkout.js')).registerCheckout],
  [['status'], async () => (await import('./status.js')).registerStatus],
  [['ls', 'diff', 'refs'], async () => (await import('./inspect.js')).registerInspect],
  [['blob'], async () => (await import('./blob.js')).registerBlob],
  [['verify', 'gc'], async () => (await import('./maintenance.js')).registerMaintenance],
  [['serve', 'push'], async () => (await import('./remote.js')).registerRemote],
  [['pull'], async () => (await import('./pull.js')).registerPull],
  [['pack', 'unpack', 'import'], async () => (await import('./archive.js')).registerArchive],
];

/** The registrations needed for `argv`: the named command's file, or all of them. */
export async function commandsFor(argv: readonly string[]): Promise<Register[]> {
  const name = argv.slice(2).find((a) => !a.startsWith('-'));
  const hit = name === undefined || name === 'help' ? undefined : table.find(([names]) => names.includes(name));
  return Promise.all((hit ? [hit] : table).map(([, load]) => load()));
}
