/**
 * A role's options, declared once and loaded with the precedence
 * flag > environment variable > TOML config file > default, remembering where each value came
 * from so `config print` can show it.
 */
import { readFileSync } from "node:fs";
import { parse, TomlError } from "smol-toml";
import type * as z from "zod";

/** One option of a role. */
export interface OptionSpec<T> {
  /** Command-line flag in kebab case without dashes, e.g. "data-dir" for --data-dir. */
  flag: string;
  /** Environment variable, e.g. "FLOTILLA_DATA_DIR". An empty value counts as unset. */
  env: string;
  /** Top-level key in the TOML config file, e.g. "data_dir". */
  key: string;
  /**
   * Validates and converts the raw value: a string from the environment, whatever commander
   * produced for the flag, a typed TOML value from the file. So it must accept strings
   * (`z.coerce.number()`, `z.stringbool()`) as well as the TOML type. Without a `default`, it
   * is also given `undefined` when nothing sets the option: `.optional()` makes the option
   * optional, anything else makes it required.
   */
  schema: z.ZodType<T>;
  /** Value when nothing sets the option; used as is, not passed through `schema`. */
  default?: NoInfer<T>;
  /** One line for help text. */
  doc: string;
  /** Never printed: formatConfig shows `***`. */
  secret?: boolean;
}

/** A role's options by name (camelCase by convention: the name of the value in code). */
export type OptionSpecs = Record<string, OptionSpec<unknown>>;

/** The typed values of a set of options. */
export type Values<S> = { [K in keyof S]: S[K] extends OptionSpec<infer T> ? T : never };

/** Where a value came from. */
export type Source = "flag" | "env" | "file" | "default";

/** Loaded values and the source of each. */
export interface Loaded<S> {
  values: Values<S>;
  sources: { [K in keyof S]: Source };
  /** Path of the config file, when one was read. */
  file?: string;
}

/** Raw inputs for loadConfig. */
export interface ConfigInput {
  /** Options as commander's `opts()` returns them (camelCase keys); undefined means not given. */
  flags: Record<string, unknown>;
  /** Usually `process.env`. */
  env: Record<string, string | undefined>;
  /** Path of a TOML config file; it must exist. */
  configFile?: string;
}

/**
 * Longest delay Node's timers wait (2^31 - 1 ms, about 24.8 days). A longer one fires after
 * 1 ms instead, so options handed to setTimeout or setInterval are capped at it.
 */
export const MAX_DELAY_MS = 2_147_483_647;

/**
 * A configuration problem, in one line that names the option and its source,
 * e.g. `invalid value for --listen (flag): expected host:port`.
 */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/**
 * Declares a role's options; checks that `default` fits `schema` and keeps the value types.
 * Throws an Error when two options share a flag, variable or key (a programming mistake).
 */
export function defineOptions<V>(specs: { [K in keyof V]: OptionSpec<V[K]> }): { [K in keyof V]: OptionSpec<V[K]> } {
  const list: OptionSpec<unknown>[] = Object.values(specs);
  for (const field of ["flag", "env", "key"] as const) {
    const seen = new Set<string>();
    for (const spec of list) {
      if (seen.has(spec[field])) throw new Error(`two options share the ${field} ${JSON.stringify(spec[field])}`);
      seen.add(spec[field]);
    }
  }
  return specs;
}

/**
 * Loads every option: flag, else environment variable, else config file, else default.
 * Reads the config file synchronously (this runs once at startup). Throws a ConfigError for
 * a missing or malformed file, an unknown key in it, an invalid value or a missing required
 * option.
 */
export function loadConfig<S extends OptionSpecs>(specs: S, input: ConfigInput): Loaded<S> {
  const file = input.configFile === undefined ? undefined : readConfigFile(input.configFile, specs);
  const values: Record<string, unknown> = {};
  const sources: Record<string, Source> = {};
  for (const [name, spec] of Object.entries(specs)) {
    const found = findRaw(spec, input, file);
    if (found === undefined) {
      sources[name] = "default";
      if (spec.default !== undefined) {
        values[name] = spec.default;
        continue;
      }
      const result = spec.schema.safeParse(undefined);
      if (!result.success) {
        throw new ConfigError(
          `missing value for --${spec.flag}: pass --${spec.flag}, set ${spec.env} or set ${spec.key} in the config file`,
        );
      }
      values[name] = result.data;
      continue;
    }
    const result = spec.schema.safeParse(found.raw);
    if (!result.success) {
      throw new ConfigError(`invalid value for ${describeSource(spec, found.source, input.configFile)}: ${issues(result.error)}`);
    }
    values[name] = result.data;
    sources[name] = found.source;
  }
  const loaded: Loaded<S> = { values: values as Values<S>, sources: sources as Loaded<S>["sources"] };
  if (input.configFile !== undefined) loaded.file = input.configFile;
  return loaded;
}

/**
 * The effective configuration as TOML, one line per option with its source:
 * `data_dir = "/var/lib/flotilla"   # from flag --data-dir`. Secrets and unset options are
 * commented out, so the text can be pasted into a config file. Values are printed as the
 * schema produced them; a schema that transforms into something its input does not accept
 * will not load its own output back.
 */
export function formatConfig<S extends OptionSpecs>(specs: S, loaded: Loaded<S>): string {
  const rows = Object.entries(specs).map(([name, spec]) => {
    const value: unknown = loaded.values[name];
    const key = tomlKey(spec.key);
    const source = loaded.sources[name];
    let left: string;
    if (value === undefined || value === null) left = `# ${key} is not set`;
    else if (spec.secret) left = `# ${key} = "***"`;
    else left = `${key} = ${tomlValue(value)}`;
    let from: string;
    if (source === "flag") from = `from flag --${spec.flag}`;
    else if (source === "env") from = `from ${spec.env}`;
    else if (source === "file") from = `from ${loaded.file ?? "config file"}`;
    else from = "default";
    return { left, from: spec.secret ? `${from} (secret)` : from };
  });
  const width = Math.max(0, ...rows.map((row) => row.left.length));
  return rows.map((row) => `${row.left.padEnd(width)}   # ${row.from}\n`).join("");
}

type TomlTable = Record<string, unknown>;

function readConfigFile(path: string, specs: OptionSpecs): TomlTable {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new ConfigError(`config file ${path} does not exist`);
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  let table: TomlTable;
  try {
    table = parse(text);
  } catch (err) {
    if (!(err instanceof TomlError)) throw err;
    const problem = (err.message.split("\n")[0] ?? "").replace(/^Invalid TOML document: /, "");
    throw new ConfigError(`invalid TOML in ${path} at line ${err.line}, column ${err.column}: ${problem}`);
  }
  const keys = Object.values(specs).map((spec) => spec.key);
  const unknown = Object.keys(table).filter((key) => !keys.includes(key));
  if (unknown.length > 0) {
    const named = unknown.map((key) => {
      const guess = keys.find((known) => normalize(known) === normalize(key));
      return guess === undefined ? JSON.stringify(key) : `${JSON.stringify(key)} (did you mean ${JSON.stringify(guess)}?)`;
    });
    throw new ConfigError(`unknown ${unknown.length === 1 ? "key" : "keys"} ${named.join(", ")} in ${path}`);
  }
  return table;
}

function normalize(key: string): string {
  return key.toLowerCase().replaceAll("-", "_");
}

function findRaw(
  spec: OptionSpec<unknown>,
  input: ConfigInput,
  file: TomlTable | undefined,
): { raw: unknown; source: Exclude<Source, "default"> } | undefined {
  // commander's opts() camelCases --data-dir into dataDir.
  const camel = spec.flag.replace(/-([A-Za-z0-9])/g, (_, c: string) => c.toUpperCase());
  for (const name of [camel, spec.flag]) {
    const raw = Object.hasOwn(input.flags, name) ? input.flags[name] : undefined;
    if (raw !== undefined) return { raw, source: "flag" };
  }
  const env = Object.hasOwn(input.env, spec.env) ? input.env[spec.env] : undefined;
  if (env !== undefined && env !== "") return { raw: env, source: "env" };
  if (file !== undefined && Object.hasOwn(file, spec.key)) return { raw: file[spec.key], source: "file" };
  return undefined;
}

function describeSource(spec: OptionSpec<unknown>, source: Source, file: string | undefined): string {
  if (source === "flag") return `--${spec.flag} (flag)`;
  if (source === "env") return `${spec.env} (environment variable)`;
  return `${spec.key} (config file ${file ?? ""})`;
}

function issues(error: z.ZodError): string {
  return error.issues
    .map((issue) => (issue.path.length > 0 ? `${issue.path.map(String).join(".")}: ` : "") + issue.message)
    .join("; ")
    .replace(/\s+/g, " ");
}

function tomlKey(key: string): string {
  return /^[A-Za-z0-9_-]+$/.test(key) ? key : tomlString(key);
}

function tomlValue(value: unknown): string {
  if (typeof value === "string") return tomlString(value);
  if (typeof value === "boolean" || typeof value === "bigint") return String(value);
  if (typeof value === "number") {
    if (Number.isNaN(value)) return "nan";
    if (!Number.isFinite(value)) return value > 0 ? "inf" : "-inf";
    // String() writes 2**53 or 1e20 as digits, a TOML integer too big to read back: use a float.
    if (Number.isInteger(value) && !Number.isSafeInteger(value)) return value.toExponential();
    return String(value);
  }
  if (value instanceof Date && !Number.isNaN(value.getTime())) return value.toISOString();
  if (Array.isArray(value)) {
    return `[${value.filter((item) => item !== undefined && item !== null).map(tomlValue).join(", ")}]`;
  }
  if (typeof value === "object" && value !== null) {
    const proto: unknown = Object.getPrototypeOf(value);
    if (proto === Object.prototype || proto === null) {
      const entries = Object.entries(value).filter(([, item]) => item !== undefined && item !== null);
      if (entries.length === 0) return "{}";
      return `{ ${entries.map(([k, item]) => `${tomlKey(k)} = ${tomlValue(item)}`).join(", ")} }`;
    }
  }
  // URLs and other objects from transforms: their text form.
  return tomlString(String(value));
}

const ESCAPES: Record<string, string> = { "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\" };

function tomlString(text: string): string {
  const escaped = text.replace(
    /[\u0000-\u001f"\\\u007f]/g,
    (c) => ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  return `"${escaped}"`;
}
