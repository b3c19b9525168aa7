/**
 * Property-test helpers for a program's options (`@flotilla/protocol/testing/config`): text that
 * looks like a number, and loading options from an environment alone. It loads fast-check, so it
 * is kept apart from `@flotilla/protocol/testing`.
 */
import fc from "fast-check";
import { ConfigError, loadConfig, type OptionSpecs } from "./config/index.ts";

/** Number-looking text: digits of any length, signs, exponents, hex, spaces. */
export const numberish: fc.Arbitrary<string> = fc.oneof(
  fc.bigInt({ min: -(10n ** 20n), max: 10n ** 20n }).map(String),
  fc.integer({ min: 1, max: 2 ** 33 }).map(String),
  fc.string({ unit: fc.constantFrom(..."0123456789"), minLength: 1, maxLength: 30 }),
  fc.constantFrom("1e3", "1e10", "0x7fffffff", "0x80000000", " 5 ", "-1", "0", "1.5", "Infinity", "NaN", "", "abc"),
);

/** The option values `specs` load from `env` (no flags, no file), or the ConfigError refusing them; any other error is thrown. */
export function loadFromEnv(specs: OptionSpecs, env: Record<string, string>): Record<string, unknown> | ConfigError {
  try {
    return loadConfig(specs, { flags: {}, env }).values as Record<string, unknown>;
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
}
