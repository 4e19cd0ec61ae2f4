/**
 * At most `size` holders at once; the others wait in arrival order, each at most `waitMs`, then
 * give up with the error `timedOut` makes. A slot given back goes straight to the longest waiter.
 */
export class Slots {
  private held = 0;
  /** Each waiter's grant, oldest first. */
  private readonly queue: Array<() => void> = [];

  constructor(
    readonly size: number,
    private readonly waitMs: number,
    private readonly timedOut: () => Error,
  ) {}

  /** Callers waiting for a slot now. */
  get waiting(): number {
    return this.queue.length;
  }

  take(): Promise<void> {
    if (this.held < this.size) {
      this.held += 1;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const grant = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.queue.splice(this.queue.indexOf(grant), 1);
        reject(this.timedOut());
      }, this.waitMs);
      this.queue.push(grant);
    });
  }

  give(): void {
    const next = this.queue.shift();
    if (next) next();
    else this.held -= 1;
  }
}
