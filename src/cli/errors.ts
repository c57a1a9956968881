/** What every CLI command throws to end with one line on stderr and an exit code (docs/ARCHITECTURE.md, Errors). */
import { ConfigError, loadConfig, type LoadedConfig } from "../config/load";

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2 | 3,
  ) {
    super(message);
  }
}

/** Loads the configuration; a bad file ends the command with exit 2 and every problem on stderr. */
export function load(file: string | undefined): LoadedConfig {
  try {
    return loadConfig(file);
  } catch (e) {
    if (e instanceof ConfigError) {
      if (e.problems.length === 1) throw new CliError(e.message, 2);
      process.stderr.write(`${e.message}\n`);
      throw new CliError(`configuration has ${e.problems.length} problems`, 2);
    }
    throw e;
  }
}
