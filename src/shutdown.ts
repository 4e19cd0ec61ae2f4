import { logsWritten, type Logger } from './logger.js';

/**
 * The one way out of the process: idempotent, runs the registered steps newest first (what started
 * last stops first), and exits before the bound even when a step hangs.
 */
export class Shutdown {
  private readonly steps: Array<{ name: string; stop: () => Promise<void> | void }> = [];
  private started: Promise<void> | undefined;
  readonly controller = new AbortController();

  constructor(
    private readonly logger: Logger,
    private readonly timeoutMs: number,
    private readonly exit: (code: number) => void = (code) => process.exit(code),
  ) {}

  get inProgress(): boolean {
    return this.started !== undefined;
  }

  add(name: string, stop: () => Promise<void> | void): void {
    this.steps.push({ name, stop });
  }

  /** Begins the shutdown (once: later calls get the same promise). */
  begin(reason: string, exitCode = 0): Promise<void> {
    this.started ??= this.execute(reason, exitCode);
    return this.started;
  }

  private async execute(reason: string, exitCode: number): Promise<void> {
    this.logger.info({ reason }, 'shutting down');
    this.controller.abort();
    // PM2 kills after kill_timeout; we must be gone before it.
    const force = setTimeout(() => {
      this.logger.error({ timeoutMs: this.timeoutMs }, 'shutdown took too long; forcing exit');
      this.exit(exitCode || 1);
    }, this.timeoutMs).unref();
    for (const step of [...this.steps].reverse()) {
      try {
        await step.stop();
      } catch (err) {
        this.logger.warn({ err, step: step.name }, 'shutdown step failed');
      }
    }
    this.logger.info('stopped');
    await logsWritten(this.logger);
    clearTimeout(force);
    this.exit(exitCode);
  }
}
