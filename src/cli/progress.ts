/**
 * A one-line progress bar on stderr, drawn only when stderr is a terminal and at most every 100 ms,
 * so it costs nothing in pipes and CI logs.
 */
import { formatBytes } from './output.js';

export interface ProgressState {
  done: number;
  total: number;
  bytes: number;
  label: string;
}

export class ProgressBar {
  private last = 0;
  private readonly started = Date.now();
  private drawn = false;
  constructor(private readonly enabled: boolean = process.stderr.isTTY === true) {}

  update(s: ProgressState, force = false): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!force && now - this.last < 100) return;
    this.last = now;
    const width = 30;
    const frac = s.total > 0 ? Math.min(1, s.done / s.total) : 0;
    const filled = Math.round(frac * width);
    const secs = (now - this.started) / 1000;
    const rate = secs > 0 ? `${formatBytes(s.bytes / secs)}/s` : '';
    process.stderr.write(
      `\r${s.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${s.done}/${s.total} ${formatBytes(s.bytes)} ${rate}\x1b[K`,
    );
    this.drawn = true;
  }

  finish(): void {
    if (this.drawn) process.stderr.write('\r\x1b[K');
  }
}
