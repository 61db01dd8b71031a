/**
 * Rules for entry names and symlink targets. Every name read from a tree, an archive or the network
 * passes through here before it is joined to a path on disk.
 */

/** Linux NAME_MAX, in UTF-8 bytes: a longer name cannot be created on disk anyway. */
export const MAX_NAME_BYTES = 255;
/** Linux PATH_MAX for a symlink target. */
export const MAX_TARGET_BYTES = 4095;
/** Deepest nesting a tree may have; deeper trees are refused rather than recursed into. */
export const MAX_DEPTH = 1024;

/** Returns why `name` is not a safe single path component, or null when it is. */
export function nameProblem(name: string): string | null {
  if (name.length === 0) return 'empty name';
  if (name === '.' || name === '..') return `name '${name}' is reserved`;
  if (name.includes('/')) return `name '${name}' contains '/'`;
  if (name.includes('\0')) return `name contains a NUL byte`;
  if (hasLoneSurrogate(name)) return `name '${name}' is not valid Unicode`;
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) return `name is longer than ${MAX_NAME_BYTES} bytes`;
  return null;
}

/**
 * nameProblem for a name decoded from UTF-8 bytes, which cannot hold a lone surrogate. Perf: this
 * runs for every entry of every tree read; short names skip the byte count.
 */
export function decodedNameProblem(name: string): string | null {
  const n = name.length;
  if (n === 0 || (n <= 2 && (name === '.' || name === '..'))) return nameProblem(name);
  if (name.includes('/') || name.includes('\0')) return nameProblem(name);
  // A UTF-16 unit is at most 3 UTF-8 bytes: 85 units cannot pass 255 bytes.
  if (n > 85 && Buffer.byteLength(name) > MAX_NAME_BYTES) return nameProblem(name);
  return null;
}

/** Returns why `target` cannot be a symlink target, or null. Targets are otherwise kept verbatim. */
export function symlinkTargetProblem(target: string): string | null {
  if (target.length === 0) return 'empty symlink target';
  if (target.includes('\0')) return 'symlink target contains a NUL byte';
  // A UTF-16 unit is at most 3 UTF-8 bytes: shorter targets skip the byte count (every symlink).
  if (target.length > MAX_TARGET_BYTES / 3 && Buffer.byteLength(target) > MAX_TARGET_BYTES) return `symlink target is longer than ${MAX_TARGET_BYTES} bytes`;
  return null;
}

/**
 * Orders names by their UTF-8 bytes, as REAPI requires. UTF-8 byte order equals code point order,
 * which differs from JavaScript's UTF-16 order only between surrogates and U+E000..U+FFFF.
 */
export function compareNames(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    }
    return x - y;
  }
  return a.length - b.length;
}

function hasLoneSurrogate(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    if (c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        i++;
        continue;
      }
    }
    return true;
  }
  return false;
}
