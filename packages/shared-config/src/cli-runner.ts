import { EXIT_CODES, isMeshError } from './errors';

/**
 * Runs a bin's main function and turns its outcome into an exit code: the one place where
 * errors become exit codes. A MeshError prints `NAME: error [CODE]: message` and its hint;
 * anything else is a bug and prints its stack.
 */
export async function runMain(name: string, main: () => Promise<number | void> | number | void): Promise<void> {
  try {
    const code = await main();
    if (typeof code === 'number') process.exitCode = code;
  } catch (err) {
    process.exitCode = reportError(name, err);
  }
}

/** Prints an error the way every bin does and returns the exit code for it. */
export function reportError(name: string, err: unknown): number {
  if (isMeshError(err)) {
    process.stderr.write(`${name}: error [${err.code}]: ${err.message}\n`);
    if (err.hint) process.stderr.write(`  hint: ${err.hint}\n`);
    return err.exitCode;
  }
  const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`${name}: unexpected error: ${text}\n`);
  return EXIT_CODES.failure;
}
