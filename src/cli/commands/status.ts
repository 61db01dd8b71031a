import type { Command } from 'commander';
import { status } from '../../materialize/status.js';
import { addJsonOption, addStoreOption, openExistingStore } from '../common.js';
import { printJson } from '../output.js';
import { escapeControl } from '../../core/display.js';

export function registerStatus(program: Command): void {
  const cmd = program
    .command('status')
    .description('list what changed in DIR since the last checkout: M modified, A added (untracked), D removed')
    .argument('<dir>', 'a directory treecast checked out into');
  addStoreOption(cmd);
  addJsonOption(cmd);
  cmd.addHelpText(
    'after',
    `
One line per path, like \`git status --short\`: 'M path', 'A path', 'D path'; a directory ends in '/'.
A whole untracked directory is one 'A dir/' line. Names that are not UTF-8 have their bytes escaped
(\\xNN). Files are compared by size, mode and change time first and read only when those cannot
prove them unchanged. Nothing is written. Exit 0 whether or not anything changed.`,
  );
  cmd.action((dir: string, o: { store?: string; json?: boolean }) => {
    const r = status(dir, openExistingStore(o));
    if (o.json) {
      printJson({ ok: true, ...r });
      return;
    }
    const lines = [...r.modified.map((p) => ({ p, l: 'M' })), ...r.added.map((p) => ({ p, l: 'A' })), ...r.removed.map((p) => ({ p, l: 'D' }))];
    lines.sort((a, b) => (a.p < b.p ? -1 : a.p > b.p ? 1 : 0));
    process.stdout.write(lines.map(({ p, l }) => `${l} ${escapeControl(p)}\n`).join(''));
  });
}
