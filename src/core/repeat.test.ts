import { repeat } from "./repeat";

describe("repeat", () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it("runs after each delay, never overlapping, reads the delay each time, and stops", async () => {
    const delays = [100, 50, 200];
    let runs = 0;
    let running = 0;
    let maxRunning = 0;
    let finish!: () => void;
    const job = repeat(
      async () => {
        runs++;
        running++;
        maxRunning = Math.max(maxRunning, running);
        await new Promise<void>((r) => (finish = r));
        running--;
      },
      () => delays.shift() ?? 1000,
    );
    await jest.advanceTimersByTimeAsync(99);
    expect(runs).toBe(0);
    await jest.advanceTimersByTimeAsync(1);
    expect(runs).toBe(1);
    await jest.advanceTimersByTimeAsync(1000); // the first run is still going: nothing new starts
    expect(runs).toBe(1);
    finish();
    await jest.advanceTimersByTimeAsync(49);
    expect(runs).toBe(1);
    await jest.advanceTimersByTimeAsync(1);
    expect(runs).toBe(2);
    finish();
    job.stop();
    await jest.advanceTimersByTimeAsync(5000);
    expect(runs).toBe(2);
    expect(maxRunning).toBe(1);
  });

  it("reports a failed run and goes on", async () => {
    const errors: string[] = [];
    let runs = 0;
    const job = repeat(
      async () => {
        runs++;
        if (runs === 1) throw new Error("boom");
      },
      () => 10,
      (e) => errors.push(e.message),
    );
    await jest.advanceTimersByTimeAsync(35);
    job.stop();
    expect(errors).toEqual(["boom"]);
    expect(runs).toBe(3);
  });
});
