/** Redis calls of the aws_sts backend (lock.ts, revoked.ts): a failure is an `unavailable` BackendError. */
import { BackendError } from "../types";

/** Runs `op`; a failure becomes "could not <what> in Redis: <message>", unavailable. */
export async function redisCall<T>(what: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (e) {
    throw new BackendError(`could not ${what} in Redis: ${(e as Error).message}`, "unavailable", { cause: e });
  }
}
