import type { Progress } from '../registry/command-context.js';
// from src/format/ itself: ./format.js also holds the verification label, whose import makes verification.ts's zod schemas at every start-up
import { formatBytes } from '../format/human-format.js';

/**
 * A one-line progress display on a terminal: phase, bytes, rate, current item.
 * Redrawn at most ten times a second; does nothing when stderr is not a TTY.
 */
export class ProgressBar {
  private last = 0;
  private started = Date.now();
  private phase = '';
  private shown = false;

  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {}

  get enabled(): boolean {
    return Boolean(this.stream.isTTY);
  }

  update(progress: Progress): void {
    if (!this.enabled) return;
    if (progress.phase !== this.phase) {
      this.phase = progress.phase;
      this.started = Date.now();
    }
    const now = Date.now();
    if (now - this.last < 100) return;
    this.last = now;
    const seconds = Math.max(0.001, (now - this.started) / 1000);
    const rate = `${formatBytes(progress.bytes / seconds)}/s`;
    const amount = progress.totalBytes ? `${formatBytes(progress.bytes)} / ${formatBytes(progress.totalBytes)}` : formatBytes(progress.bytes);
    let text = `${progress.phase}  ${amount}  ${rate}${progress.item ? `  ${progress.item}` : ''}`;
    const width = this.stream.columns || 80; // 0 when the terminal does not say
    if (text.length > width - 1) text = `${text.slice(0, width - 2)}…`;
    this.stream.write(`\r\x1b[2K${text}`);
    this.shown = true;
  }

  /** Clears the line so normal output continues cleanly. */
  clear(): void {
    if (this.shown) this.stream.write('\r\x1b[2K');
    this.shown = false;
  }
}
