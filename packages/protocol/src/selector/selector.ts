/**
 * Label selectors in the Kubernetes style, over flat string maps (a device's labels and facts
 * merged): `env=prod,arch in (x86_64,aarch64),!decommissioned`. Requirements are ANDed.
 * Semantics follow https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/
 * (`!=` and `notin` also match when the key is absent).
 */

/** Longest selector text accepted; selectors arrive from the network. */
export const MAX_SELECTOR_LENGTH = 4096;

/** Most requirements accepted in one selector. */
export const MAX_SELECTOR_REQUIREMENTS = 100;

/** One condition on one key. `in` and `notin` values are sorted and deduplicated. */
export type Requirement =
  | { readonly op: "equals"; readonly key: string; readonly value: string }
  | { readonly op: "notEquals"; readonly key: string; readonly value: string }
  | { readonly op: "in"; readonly key: string; readonly values: readonly string[] }
  | { readonly op: "notIn"; readonly key: string; readonly values: readonly string[] }
  | { readonly op: "exists"; readonly key: string }
  | { readonly op: "notExists"; readonly key: string };

/** A parsed selector: all requirements must hold. No requirements selects everything. */
export interface Selector {
  readonly requirements: readonly Requirement[];
}

/**
 * A selector that does not parse. `position` is the 0-based index of the offending character
 * (the text's length for an unexpected end); the message names the 1-based column and shows
 * the text with a caret under that character.
 */
export class SelectorError extends Error {
  override readonly name = "SelectorError";
  readonly position: number;

  constructor(text: string, position: number, problem: string) {
    super(`invalid selector: ${problem} at column ${position + 1}\n${pointAt(text, position)}`);
    this.position = position;
  }
}

/** Parses selector text; throws a SelectorError for anything malformed or over the limits. */
export function parseSelector(text: string): Selector {
  return new Parser(text).parse();
}

/** Whether `fields` satisfies every requirement of `sel`. */
export function matchesSelector(sel: Selector, fields: Readonly<Record<string, string>>): boolean {
  return sel.requirements.every((req) => matchesRequirement(req, fields));
}

/**
 * Canonical text of a selector: no optional whitespace, `=` rather than `==`, requirements in
 * their given order. parseSelector(formatSelector(s)) equals s for any parsed s.
 */
export function formatSelector(sel: Selector): string {
  return sel.requirements.map(formatRequirement).join(",");
}

function matchesRequirement(req: Requirement, fields: Readonly<Record<string, string>>): boolean {
  // Object.hasOwn: "constructor" is a valid key and must not find Object.prototype's.
  const value = Object.hasOwn(fields, req.key) ? fields[req.key] : undefined;
  switch (req.op) {
    case "equals":
      return value === req.value;
    case "notEquals":
      return value !== req.value;
    case "in":
      return value !== undefined && req.values.includes(value);
    case "notIn":
      return value === undefined || !req.values.includes(value);
    case "exists":
      return value !== undefined;
    case "notExists":
      return value === undefined;
  }
}

function formatRequirement(req: Requirement): string {
  switch (req.op) {
    case "equals":
      return `${req.key}=${req.value}`;
    case "notEquals":
      return `${req.key}!=${req.value}`;
    case "in":
      return `${req.key} in (${req.values.join(",")})`;
    case "notIn":
      return `${req.key} notin (${req.values.join(",")})`;
    case "exists":
      return req.key;
    case "notExists":
      return `!${req.key}`;
  }
}

const KEY_CHAR = /[A-Za-z0-9._/-]/;
const VALUE_CHAR = /[A-Za-z0-9._/:+@-]/;
const SPACE = /[ \t\r\n]/;

class Parser {
  private pos = 0;

  constructor(private readonly text: string) {}

  parse(): Selector {
    if (this.text.length > MAX_SELECTOR_LENGTH) {
      throw this.error(`longer than ${MAX_SELECTOR_LENGTH} characters`, MAX_SELECTOR_LENGTH);
    }
    const requirements: Requirement[] = [];
    this.skipSpace();
    if (this.atEnd()) return { requirements };
    for (;;) {
      this.skipSpace();
      if (requirements.length === MAX_SELECTOR_REQUIREMENTS) {
        throw this.error(`more than ${MAX_SELECTOR_REQUIREMENTS} requirements`);
      }
      requirements.push(this.requirement());
      this.skipSpace();
      if (this.atEnd()) return { requirements };
      if (this.peek() !== ",") throw this.error("expected ',' or end of input");
      this.pos++;
    }
  }

  private requirement(): Requirement {
    if (this.peek() === "!") {
      this.pos++;
      this.skipSpace();
      return { op: "notExists", key: this.key() };
    }
    const key = this.key();
    this.skipSpace();
    const c = this.peek();
    if (c === undefined || c === ",") return { op: "exists", key };
    if (c === "=") {
      this.pos += this.text[this.pos + 1] === "=" ? 2 : 1;
      return { op: "equals", key, value: this.optionalValue() };
    }
    if (c === "!") {
      this.pos++;
      if (this.peek() !== "=") throw this.error("expected '=' after '!'");
      this.pos++;
      return { op: "notEquals", key, value: this.optionalValue() };
    }
    const start = this.pos;
    const word = this.run(KEY_CHAR);
    if (word === "in" || word === "notin") {
      const values = this.valueSet();
      return word === "in" ? { op: "in", key, values } : { op: "notIn", key, values };
    }
    throw this.error("expected '=', '==', '!=', 'in', 'notin', ',' or end of input", start);
  }

  private key(): string {
    const key = this.run(KEY_CHAR);
    if (key === "") throw this.error("expected a key");
    return key;
  }

  private optionalValue(): string {
    this.skipSpace();
    return this.run(VALUE_CHAR);
  }

  private valueSet(): string[] {
    this.skipSpace();
    if (this.peek() !== "(") throw this.error("expected '('");
    this.pos++;
    const values = new Set<string>();
    for (;;) {
      this.skipSpace();
      const value = this.run(VALUE_CHAR);
      if (value === "") throw this.error("expected a value");
      values.add(value);
      this.skipSpace();
      const c = this.peek();
      this.pos++;
      if (c === ")") return [...values].sort();
      if (c !== ",") throw this.error("expected ',' or ')'", this.pos - 1);
    }
  }

  private run(allowed: RegExp): string {
    const start = this.pos;
    while (this.pos < this.text.length && allowed.test(this.text[this.pos]!)) this.pos++;
    return this.text.slice(start, this.pos);
  }

  private skipSpace(): void {
    this.run(SPACE);
  }

  private peek(): string | undefined {
    return this.text[this.pos];
  }

  private atEnd(): boolean {
    return this.pos >= this.text.length;
  }

  private error(problem: string, position = this.pos): SelectorError {
    return new SelectorError(this.text, position, problem);
  }
}

const WINDOW = 60;

/**
 * Two lines: the text (control characters shown as spaces, cut to a window around `position`
 * so a 4 KiB selector does not flood a log) and a caret under `position`.
 */
function pointAt(text: string, position: number): string {
  const from = Math.max(0, position - WINDOW);
  const to = Math.min(text.length, position + WINDOW);
  let line = text.slice(from, to).replace(/[\u0000-\u001f\u007f]/g, " ");
  let caret = position - from;
  if (from > 0) {
    line = "..." + line;
    caret += 3;
  }
  if (to < text.length) line += "...";
  return `  ${line}\n  ${" ".repeat(caret)}^`;
}
