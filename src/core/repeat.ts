/**
 * A periodic job: runs `fn` again `delayMs()` after its previous run ended (runs never overlap;
 * the delay is read each time, so it may depend on state or carry jitter), until `stop()`.
 * Timers are unref'ed: a periodic job never keeps the process alive. A run's error goes to
 * `onError` and the job goes on.
 */
export interface Repeating {
  stop(): void;
}

export function repeat(fn: () => Promise<unknown>, delayMs: () => number, onError: (e: Error) => void = () => undefined): Repeating {
  let timer: NodeJS.Timeout | null = null;
  let stopped = false;
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      void fn()
        .catch((e: unknown) => onError(e instanceof Error ? e : new Error(String(e))))
        .finally(schedule);
    }, delayMs());
    timer.unref();
  };
  schedule();
  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}
