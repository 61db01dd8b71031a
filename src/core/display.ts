/**
 * Text for a terminal (pure). Names from trees, archives, the disk and the network may hold control
 * characters; printed raw, an ESC or a C1 CSI lets a crafted name move the cursor, rewrite earlier
 * lines or set the window title. Every human message and listing goes through `escapeControl`, the
 * one escaping function; `--json` output is JSON and needs none.
 *
 * Escapes: C0 (U+0000-U+001F: \t \n \r as such, others \xNN), DEL (\x7f), C1 (U+0080-U+009F as
 * \u0080), lone UTF-16 surrogates (\uD800: a string that was not valid Unicode), and, for names
 * given as bytes, every byte that is not part of valid UTF-8 (\xNN). Backslashes are left alone,
 * so escaping is idempotent and an already escaped message is not mangled.
 */

// Perf: one test of the whole string; almost every name is plain and is returned as it is.
const NEEDS_ESCAPE = /[\x00-\x1f\x7f-\x9f\ud800-\udfff]/;
const ESCAPED = /[\x00-\x1f\x7f-\x9f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
const NAMED: Record<string, string> = { '\t': '\\t', '\n': '\\n', '\r': '\\r' };

function escapeChar(c: string): string {
  const named = NAMED[c];
  if (named) return named;
  const code = c.charCodeAt(0);
  return code < 0x80 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** `text` safe to print on a terminal; bytes are read as UTF-8 with invalid bytes shown as \xNN. */
export function escapeControl(text: string | Uint8Array): string {
  const s = typeof text === 'string' ? text : decodeShowingInvalid(text);
  return NEEDS_ESCAPE.test(s) ? s.replace(ESCAPED, escapeChar) : s;
}

/** Like escapeControl, but keeps the line breaks of a message that is several lines by design. */
export function escapeControlLines(text: string): string {
  return text.split('\n').map(escapeControl).join('\n');
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Decodes UTF-8, replacing each byte that is not part of a valid sequence with the text `\xNN`. */
function decodeShowingInvalid(bytes: Uint8Array): string {
  try {
    return UTF8.decode(bytes);
  } catch {
    /* some bytes are invalid: walk the sequences */
  }
  let out = '';
  let i = 0;
  while (i < bytes.length) {
    const n = validSequenceLength(bytes, i);
    if (n === 0) {
      out += `\\x${bytes[i]!.toString(16).padStart(2, '0')}`;
      i++;
    } else {
      out += UTF8.decode(bytes.subarray(i, i + n));
      i += n;
    }
  }
  return out;
}

/** Length of the valid UTF-8 sequence starting at i (RFC 3629: no overlongs, surrogates or > U+10FFFF), or 0. */
function validSequenceLength(b: Uint8Array, i: number): number {
  const c = b[i]!;
  if (c < 0x80) return 1;
  const cont = (k: number, lo = 0x80, hi = 0xbf) => i + k < b.length && b[i + k]! >= lo && b[i + k]! <= hi;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c === 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if ((c >= 0xe1 && c <= 0xec) || c === 0xee || c === 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (c === 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;
  if (c === 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xf1 && c <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c === 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}
