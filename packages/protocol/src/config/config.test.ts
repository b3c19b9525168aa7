import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "smol-toml";
import { describe, expect, expectTypeOf, it } from "vitest";
import * as z from "zod";
import { useTempDir } from "../testing-hooks.ts";
import { ConfigError, defineOptions, formatConfig, loadConfig, type ConfigInput } from "./config.ts";

const options = defineOptions({
  dataDir: {
    flag: "data-dir",
    env: "FLOTILLA_DATA_DIR",
    key: "data_dir",
    schema: z.string().min(1),
    default: "/var/lib/flotilla",
    doc: "Where state is kept.",
  },
  listen: {
    flag: "listen",
    env: "FLOTILLA_LISTEN",
    key: "listen",
    schema: z.string().regex(/^[^:]*:\d+$/, "expected host:port"),
    default: "0.0.0.0:7700",
    doc: "Address to listen on.",
  },
  workers: {
    flag: "workers",
    env: "FLOTILLA_WORKERS",
    key: "workers",
    schema: z.coerce.number().int().positive(),
    default: 4,
    doc: "Worker count.",
  },
  debug: {
    flag: "debug",
    env: "FLOTILLA_DEBUG",
    key: "debug",
    schema: z.union([z.boolean(), z.stringbool()]),
    default: false,
    doc: "Verbose logging.",
  },
  token: {
    flag: "token",
    env: "FLOTILLA_TOKEN",
    key: "token",
    schema: z.string().optional(),
    doc: "Bootstrap token.",
    secret: true,
  },
});

const dir = useTempDir("flotilla-config-");

function file(toml: string): string {
  const path = join(dir.path, "flotilla.toml");
  writeFileSync(path, toml);
  return path;
}

function errorOf(load: () => unknown): ConfigError {
  try {
    load();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("loadConfig", () => {
  it("uses defaults when nothing is given and says so", () => {
    const loaded = loadConfig(options, { flags: {}, env: {} });
    expect(loaded.values).toEqual({
      dataDir: "/var/lib/flotilla",
      listen: "0.0.0.0:7700",
      workers: 4,
      debug: false,
      token: undefined,
    });
    expect(loaded.sources).toEqual({
      dataDir: "default",
      listen: "default",
      workers: "default",
      debug: "default",
      token: "default",
    });
    expect(loaded.file).toBeUndefined();
  });

  it("prefers a flag to the environment, the environment to the file and the file to the default", () => {
    const input: ConfigInput = {
      flags: { dataDir: "/from/flag" },
      env: { FLOTILLA_DATA_DIR: "/from/env", FLOTILLA_LISTEN: "env:1" },
      configFile: file('data_dir = "/from/file"\nlisten = "file:2"\nworkers = 8\n'),
    };
    const loaded = loadConfig(options, input);
    expect(loaded.values.dataDir).toBe("/from/flag");
    expect(loaded.values.listen).toBe("env:1");
    expect(loaded.values.workers).toBe(8);
    expect(loaded.values.debug).toBe(false);
    expect(loaded.sources).toMatchObject({ dataDir: "flag", listen: "env", workers: "file", debug: "default" });
    expect(loaded.file).toBe(input.configFile);
  });

  it("reads flags under commander's camelCase name or the kebab name", () => {
    expect(loadConfig(options, { flags: { dataDir: "/a" }, env: {} }).values.dataDir).toBe("/a");
    expect(loadConfig(options, { flags: { "data-dir": "/b" }, env: {} }).values.dataDir).toBe("/b");
  });

  it("treats an undefined flag and an empty environment variable as not given", () => {
    const loaded = loadConfig(options, {
      flags: { dataDir: undefined },
      env: { FLOTILLA_DATA_DIR: "", FLOTILLA_LISTEN: undefined },
      configFile: file('data_dir = "/from/file"\n'),
    });
    expect(loaded.values.dataDir).toBe("/from/file");
    expect(loaded.sources.dataDir).toBe("file");
    expect(loaded.sources.listen).toBe("default");
  });

  it("converts strings from flags and the environment and typed values from the file", () => {
    const fromEnv = loadConfig(options, { flags: { debug: true }, env: { FLOTILLA_WORKERS: "12" } });
    expect(fromEnv.values.workers).toBe(12);
    expect(fromEnv.values.debug).toBe(true);
    expect(loadConfig(options, { flags: {}, env: { FLOTILLA_DEBUG: "false" } }).values.debug).toBe(false);
    const fromFile = loadConfig(options, { flags: {}, env: {}, configFile: file("workers = 3\ndebug = true\n") });
    expect(fromFile.values).toMatchObject({ workers: 3, debug: true });
  });

  it("types each value after its schema", () => {
    const loaded = loadConfig(options, { flags: {}, env: {} });
    expectTypeOf(loaded.values.workers).toEqualTypeOf<number>();
    expectTypeOf(loaded.values.debug).toEqualTypeOf<boolean>();
    expectTypeOf(loaded.values.token).toEqualTypeOf<string | undefined>();
    expectTypeOf(loaded.sources.dataDir).toEqualTypeOf<"flag" | "env" | "file" | "default">();
    defineOptions({
      // @ts-expect-error a default must fit the schema
      port: { flag: "port", env: "PORT", key: "port", schema: z.number(), default: "7700", doc: "Port." },
    });
    expect(loaded.values.workers).toBe(4);
  });

  it("names the flag when a flag's value is invalid", () => {
    const err = errorOf(() => loadConfig(options, { flags: { listen: "nowhere" }, env: {} }));
    expect(err.message).toBe("invalid value for --listen (flag): expected host:port");
  });

  it("names the variable when an environment value is invalid", () => {
    const err = errorOf(() => loadConfig(options, { flags: {}, env: { FLOTILLA_WORKERS: "many" } }));
    expect(err.message).toMatch(/^invalid value for FLOTILLA_WORKERS \(environment variable\): .*expected number/);
    expect(err.message).not.toContain("\n");
  });

  it("names the key and the file when a file value is invalid", () => {
    const path = file("workers = -1\n");
    const err = errorOf(() => loadConfig(options, { flags: {}, env: {}, configFile: path }));
    expect(err.message).toMatch(new RegExp(`^invalid value for workers \\(config file ${path}\\): `));
  });

  it("refuses a required option that nothing sets", () => {
    const required = defineOptions({
      coordinator: { flag: "coordinator", env: "FLOTILLA_COORDINATOR", key: "coordinator", schema: z.url(), doc: "URL." },
    });
    const err = errorOf(() => loadConfig(required, { flags: {}, env: {} }));
    expect(err.message).toBe(
      "missing value for --coordinator: pass --coordinator, set FLOTILLA_COORDINATOR or set coordinator in the config file",
    );
    expect(loadConfig(required, { flags: {}, env: { FLOTILLA_COORDINATOR: "https://c.example" } }).values).toEqual({
      coordinator: "https://c.example",
    });
  });

  it("refuses an unknown key in the file and suggests the right spelling", () => {
    const path = file('data-dir = "/x"\ncolour = "red"\n');
    const err = errorOf(() => loadConfig(options, { flags: {}, env: {}, configFile: path }));
    expect(err.message).toBe(`unknown keys "data-dir" (did you mean "data_dir"?), "colour" in ${path}`);
  });

  it("refuses prototype keys in the file as unknown", () => {
    const path = file("__proto__ = 1\n");
    const err = errorOf(() => loadConfig(options, { flags: {}, env: {}, configFile: path }));
    expect(err.message).toBe(`unknown key "__proto__" in ${path}`);
  });

  it("refuses a config file that does not exist", () => {
    const path = join(dir.path, "missing.toml");
    const err = errorOf(() => loadConfig(options, { flags: {}, env: {}, configFile: path }));
    expect(err.message).toBe(`config file ${path} does not exist`);
  });

  it("refuses malformed TOML with its line and column", () => {
    const path = file("workers = 3\ndebug = \n");
    const err = errorOf(() => loadConfig(options, { flags: {}, env: {}, configFile: path }));
    expect(err.message).toMatch(new RegExp(`^invalid TOML in ${path} at line 2, column \\d+: `));
    expect(err.message).not.toContain("\n");
  });
});

describe("defineOptions", () => {
  it("refuses two options with the same environment variable", () => {
    expect(() =>
      defineOptions({
        a: { flag: "a", env: "SAME", key: "a", schema: z.string(), doc: "A." },
        b: { flag: "b", env: "SAME", key: "b", schema: z.string(), doc: "B." },
      }),
    ).toThrow('two options share the env "SAME"');
  });
});

describe("formatConfig", () => {
  it("prints one aligned line per option with its source", () => {
    const path = file("workers = 8\n");
    const loaded = loadConfig(options, {
      flags: { dataDir: "/srv/flotilla" },
      env: { FLOTILLA_LISTEN: "127.0.0.1:7700" },
      configFile: path,
    });
    expect(formatConfig(options, loaded)).toBe(
      [
        `data_dir = "/srv/flotilla"   # from flag --data-dir`,
        `listen = "127.0.0.1:7700"    # from FLOTILLA_LISTEN`,
        `workers = 8                  # from ${path}`,
        `debug = false                # default`,
        `# token is not set           # default (secret)`,
        "",
      ].join("\n"),
    );
  });

  it("hides secrets behind *** in a commented-out line", () => {
    const loaded = loadConfig(options, { flags: {}, env: { FLOTILLA_TOKEN: "s3cret-token" } });
    const text = formatConfig(options, loaded);
    expect(text).toContain('# token = "***"');
    expect(text).toContain("# from FLOTILLA_TOKEN (secret)");
    expect(text).not.toContain("s3cret-token");
  });

  it("writes TOML that loads back to the same values", () => {
    const loaded = loadConfig(options, {
      flags: { dataDir: 'C:\\odd "dir"\n\u0001' },
      env: { FLOTILLA_WORKERS: "6", FLOTILLA_DEBUG: "yes" },
    });
    const text = formatConfig(options, loaded);
    expect(parse(text)).toEqual({ data_dir: 'C:\\odd "dir"\n\u0001', listen: "0.0.0.0:7700", workers: 6, debug: true });
    const again = loadConfig(options, { flags: {}, env: {}, configFile: file(text) });
    expect(again.values).toEqual(loaded.values);
  });

  it("writes arrays, tables and transformed objects as inline TOML", () => {
    const rich = defineOptions({
      labels: {
        flag: "labels",
        env: "FLOTILLA_LABELS",
        key: "labels",
        schema: z.record(z.string(), z.string()),
        default: { env: "prod", "k.io/x": "y" },
        doc: "Labels.",
      },
      peers: { flag: "peers", env: "FLOTILLA_PEERS", key: "peers", schema: z.array(z.string()), default: ["a", "b"], doc: "Peers." },
      url: {
        flag: "url",
        env: "FLOTILLA_URL",
        key: "url",
        schema: z.string().transform((s) => new URL(s)),
        default: new URL("https://c.example/"),
        doc: "URL.",
      },
      ratio: { flag: "ratio", env: "FLOTILLA_RATIO", key: "ratio", schema: z.number(), default: 0.5, doc: "Ratio." },
    });
    const text = formatConfig(rich, loadConfig(rich, { flags: {}, env: {} }));
    expect(text.split("\n").map((line) => line.replace(/\s+# default$/, ""))).toEqual([
      'labels = { env = "prod", "k.io/x" = "y" }',
      'peers = ["a", "b"]',
      'url = "https://c.example/"',
      "ratio = 0.5",
      "",
    ]);
    expect(parse(text)).toEqual({
      labels: { env: "prod", "k.io/x": "y" },
      peers: ["a", "b"],
      url: "https://c.example/",
      ratio: 0.5,
    });
  });
});
