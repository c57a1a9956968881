import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "./api";

/** How often lists refresh themselves (the contract says within 10 seconds). */
export const REFRESH_MS = 5000;

export interface Polled<T> {
  data: T | null;
  error: string | null;
  updatedAt: Date | null;
  reload: () => void;
}

/**
 * Loads `load(false)` now and `load(true)` every REFRESH_MS (a background refresh), again
 * whenever `deps` change; stops while the tab is hidden.
 */
export function usePolled<T>(load: (refresh: boolean) => Promise<T>, deps: unknown[], poll = true): Polled<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [updatedAt, setUpdatedAt] = useState<Date | null>(null);
  const [tick, setTick] = useState(0);
  const gen = useRef(0);
  useEffect(() => {
    const mine = ++gen.current;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async (refresh: boolean) => {
      try {
        const d = await load(refresh);
        if (gen.current !== mine) return;
        setData(d);
        setError(null);
        setUpdatedAt(new Date());
      } catch (e) {
        if (gen.current !== mine) return;
        setError(e instanceof ApiError ? e.message : "Something went wrong.");
      }
      if (poll && gen.current === mine) timer = setTimeout(() => void run(true), REFRESH_MS);
    };
    void run(false);
    return () => {
      gen.current++;
      if (timer) clearTimeout(timer);
    };
  }, [...deps, tick]);
  return { data, error, updatedAt, reload: () => setTick((t) => t + 1) };
}

/** The current time, updated every second (remaining-time columns). */
export function useNow(): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);
  return now;
}
