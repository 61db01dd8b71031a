import type { DiskType } from '../../src/materialize/plan.js';

/**
 * What a directory listing of `rel` shows, for a disk modelled as a map of path -> entry (the
 * planner's test DiskViews): undefined when `rel` is not a directory of it.
 */
export function listOfModel(files: Map<string, { type: DiskType }>, rel: string): Map<string, DiskType> | undefined {
  if (rel !== '' && files.get(rel)?.type !== 'dir') return undefined;
  const out = new Map<string, DiskType>();
  for (const [p, e] of files) {
    const parent = p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '';
    if (parent === rel) out.set(p.slice(rel === '' ? 0 : rel.length + 1), e.type);
  }
  return out;
}
