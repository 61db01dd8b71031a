import { Command } from 'commander';
import { type Digest, formatDigest } from '../../core/digest.js';
import { diffTrees } from '../../core/tree-diff.js';
import { TreeReader, type WalkedEntry } from '../../store/tree-reader.js';
import { PathNotFoundError, UsageError } from '../../errors.js';
import { checkRefName } from '../../store/local.js';
import { guardStoreWriter } from '../../fs/target-guard.js';
import { addJsonOption, addStoreOption, explainNotATree, openExistingStore } from '../common.js';
import { escapeControl, printJson } from '../output.js';
import { type RemoteCliOptions, addRemoteClientOptions } from '../remote-options.js';

/** git-style modes, so `ls` output reads like `git ls-tree -r`; names and targets with control characters escaped. */
function lsLine(e: WalkedEntry): string {
  const path = escapeControl(e.path);
  if (e.type === 'file') return `${e.executable ? '100755' : '100644'} file    ${formatDigest(e.digest)}\t${path}`;
  if (e.type === 'symlink') return `120000 symlink -> ${escapeControl(e.target)}\t${path}`;
  return `040000 dir     ${formatDigest(e.digest)}\t${path}/`;
}

/**
 * What `ls REF PATH` lists: the directory at PATH (its entries, below it), or the one file or
 * symlink entry PATH names, as `git ls-tree -r` does. A PATH the tree lacks is "not found" (exit 3),
 * as a missing ref is; a trailing '/' asks for a directory.
 */
async function lookUp(reader: TreeReader, tree: Digest, spec: string, sub: string): Promise<{ dir: Digest; prefix: string } | { entry: WalkedEntry }> {
  const parts = sub.split('/').filter((p) => p !== '' && p !== '.');
  let dir = tree;
  let prefix = '';
  for (const [i, name] of parts.entries()) {
    const d = await reader.get(dir);
    const next = d.directories.find((e) => e.name === name);
    if (next) {
      dir = next.digest;
      prefix += `${name}/`;
      continue;
    }
    if (i === parts.length - 1 && !sub.endsWith('/')) {
      const f = d.files.find((e) => e.name === name);
      if (f) return { entry: { type: 'file', path: prefix + name, digest: f.digest, executable: f.executable } };
      const l = d.symlinks.find((e) => e.name === name);
      if (l) return { entry: { type: 'symlink', path: prefix + name, target: l.target } };
    }
    const named = spec === formatDigest(tree) ? spec : `'${spec}' (${formatDigest(tree)})`;
    throw new PathNotFoundError(`no ${sub.endsWith('/') ? 'directory' : 'path'} '${sub}' in tree ${named}`, {
      path: sub,
      digest: formatDigest(tree),
      hint: `list what the tree holds with \`treecast ls ${spec}\``,
    });
  }
  return { dir, prefix };
}

export function registerInspect(program: Command): void {
  const ls = program
    .command('ls')
    .description('list a tree recursively: mode, type, digest (<sha256>/<size>) or symlink target, path')
    .argument('<digest>', 'tree digest or ref name')
    .argument('[path]', 'list only this path inside the tree: what is below it, or the one file or symlink it names (exit 3 when the tree has no such path)');
  addStoreOption(ls);
  addJsonOption(ls, 'one JSON array, an object per entry,');
  ls.action(async (spec: string, sub: string | undefined, o: { store?: string; json?: boolean }) => {
    const store = openExistingStore(o);
    const reader = new TreeReader(store);
    const tree = store.resolve(spec);
    const rows: WalkedEntry[] = [];
    try {
      const at = sub === undefined ? { dir: tree, prefix: '' } : await lookUp(reader, tree, spec, sub);
      const entries = 'entry' in at ? [at.entry] : reader.walk(at.dir, at.prefix);
      for await (const e of entries) {
        if (o.json) rows.push(e);
        else process.stdout.write(`${lsLine(e)}\n`);
      }
    } catch (e) {
      throw explainNotATree(e, [tree], 'ls');
    }
    if (o.json) {
      printJson(rows.map((e) => ('digest' in e ? { ...e, digest: formatDigest(e.digest) } : e)));
    }
  });

  const diff = program
    .command('diff')
    .description('list paths added (A), removed (D) and changed (M) from tree A to tree B')
    .argument('<a>', 'tree digest or ref name')
    .argument('<b>', 'tree digest or ref name');
  addStoreOption(diff);
  addJsonOption(diff, 'one JSON array, an object per changed path,');
  diff.action(async (a: string, b: string, o: { store?: string; json?: boolean }) => {
    const store = openExistingStore(o);
    const reader = new TreeReader(store);
    const [ta, tb] = [store.resolve(a), store.resolve(b)];
    let changes;
    try {
      changes = diffTrees(ta, tb, (d) => reader.getSync(d));
    } catch (e) {
      throw explainNotATree(e, [ta, tb], 'diff');
    }
    if (o.json) {
      printJson(changes);
      return;
    }
    const letter = { added: 'A', removed: 'D', changed: 'M' } as const;
    for (const c of changes) process.stdout.write(`${letter[c.change]}\t${escapeControl(c.path)}${c.type === 'dir' ? '/' : ''}\n`);
  });

  const refs = program
    .command('refs')
    .description(
      'list refs: digest and name; with --delete or --rename, delete or rename refs of the local store; ' +
        'with --remote, tell which NAMEs exist on a remote cache',
    )
    .argument('[names...]', 'with --delete: the refs to delete; with --rename: OLD NEW; with --remote: the ref names to look up')
    .option(
      '--delete',
      'delete the refs NAME... from the local store (as `git update-ref -d`); all are checked first, so a missing ' +
        'or invalid NAME (exit 3, exit 2) deletes none. Only the names go: no blob is removed (`treecast gc` ' +
        'removes what no ref, checkout or action cache entry reaches any more)',
    )
    .option(
      '--rename',
      'rename ref OLD to NEW in the local store (as `git branch -m`), atomically: one of the two names exists at ' +
        'every moment; a missing OLD exits 3, an existing NEW exits 2 (ERR_TREECAST_REF_EXISTS) unless --force; ' +
        'refused with exit 9 while gc runs on the store',
    )
    .option('--force', 'with --rename: replace NEW when it is already a ref (its tree then loses that name; gc may remove it)')
    .option('--remote <url>', 'look NAMEs up on this remote cache (exit 3 when any is absent)');
  addRemoteClientOptions(refs, false);
  addStoreOption(refs);
  addJsonOption(refs, 'one JSON array, an object per ref (with --remote, --delete or --rename: one object),');
  type RefsOptions = RemoteCliOptions & { remote?: string; store?: string; json?: boolean; delete?: boolean; rename?: boolean; force?: boolean };
  refs.action(async (names: string[], o: RefsOptions) => {
    if (o.delete && o.rename) throw new UsageError('--delete and --rename cannot be used together');
    if (o.force && !o.rename) throw new UsageError('--force is for --rename (replace NEW when it exists)');
    if (o.remote) {
      if (o.delete || o.rename) throw new UsageError(`--${o.delete ? 'delete' : 'rename'} changes refs of the local store only; it cannot be used with --remote`);
      await (await import('./remote.js')).listRemoteRefs(o.remote, names, o);
      return;
    }
    if (o.delete) return deleteRefs(names, o);
    if (o.rename) return renameRef(names, o);
    if (names.length > 0) throw new UsageError('NAMEs are looked up on a remote: pass --remote URL (or --delete / --rename to change local refs)');
    const list = openExistingStore(o).listRefs();
    if (o.json) printJson(list.map((r) => ({ name: r.name, digest: formatDigest(r.digest) })));
    else for (const r of list) process.stdout.write(`${formatDigest(r.digest)} ${escapeControl(r.name)}\n`);
  });
}

function deleteRefs(names: string[], o: { store?: string; json?: boolean }): void {
  if (names.length === 0) throw new UsageError('--delete needs the names of the refs to delete', { hint: 'treecast refs --delete NAME...' });
  for (const n of names) checkRefName(n); // every name before the store is opened
  const deleted = openExistingStore(o).deleteRefs(names);
  const shown = deleted.map((d) => ({ name: d.name, digest: d.digest ? formatDigest(d.digest) : null }));
  if (o.json) {
    printJson({ ok: true, deleted: shown });
    return;
  }
  for (const d of shown) process.stdout.write(`deleted ${escapeControl(d.name)}${d.digest ? ` (was ${d.digest})` : ''}\n`);
}

function renameRef(names: string[], o: { store?: string; json?: boolean; force?: boolean }): void {
  if (names.length !== 2) throw new UsageError(`--rename takes two names, OLD and NEW (${names.length} given)`, { hint: 'treecast refs --rename OLD NEW' });
  const [from, to] = names as [string, string];
  checkRefName(from);
  checkRefName(to);
  const store = openExistingStore(o);
  // As snapshot --ref does: the writer lock keeps gc from listing refs while the tree is between two
  // names (gc is refused while it is held; a rename started while gc runs is refused, exit 9).
  const writer = guardStoreWriter(store.root, 'refs --rename');
  let r;
  try {
    r = store.renameRef(from, to, o.force === true);
  } finally {
    writer.release();
  }
  const digest = r.digest ? formatDigest(r.digest) : null;
  const replaced = r.replaced ? formatDigest(r.replaced) : null;
  if (o.json) {
    printJson({ ok: true, renamed: { from, to, digest, replaced } });
    return;
  }
  process.stdout.write(`renamed ${escapeControl(from)} to ${escapeControl(to)}${digest ? ` (${digest})` : ''}${replaced ? `, replacing ${replaced}` : ''}\n`);
}
