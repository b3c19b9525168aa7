/**
 * A `Headers` class for the agent, with the WHATWG semantics Connect relies on, so that the agent
 * never loads Node's own. Node defines `globalThis.Headers` as a getter that loads undici (its
 * fetch implementation) on first use, with the modules undici needs: in a process that already
 * holds HTTP/2, TLS and zlib that is 6.4 MiB of resident memory, a tenth of an idle agent, for a
 * class Connect uses as a small map of call headers. `installLightHeaders` puts this one in its
 * place before anything has touched Node's (packages/cli/src/entry.ts, for `flotilla agent`).
 *
 * What it keeps of the standard: names are case-insensitive tokens, values are trimmed of
 * leading and trailing whitespace and may hold no NUL, CR or LF (anything else throws a
 * TypeError, as Node's does), `get` joins repeated values with ", ", iteration is in name order
 * with repeated values joined (each `set-cookie` on its own), and the constructor takes another
 * Headers, a list of pairs or a record. Held equal to Node's class by a property test
 * (light-headers.test.ts). There are no guards (Node's "immutable" headers of a Response).
 */

/** RFC 9110 token characters. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** What the standard strips from both ends of a value: HTTP whitespace. */
const EDGE = /^[\t\n\r ]+|[\t\n\r ]+$/g;

function headerName(name: unknown): string {
  const s = String(name);
  if (!TOKEN.test(s)) throw new TypeError(`Headers: invalid header name ${JSON.stringify(s)}`);
  return s.toLowerCase();
}

function headerValue(value: unknown, name: string): string {
  const s = String(value).replace(EDGE, "");
  // A ByteString: no character above U+00FF; and none of NUL, CR, LF.
  if (/[\0\r\n\u0100-\uffff]/.test(s)) throw new TypeError(`Headers: invalid value for header ${name}`);
  return s;
}

/** What the constructor takes: another Headers, a list of pairs or a record. */
export type LightHeadersInit = Iterable<Iterable<string>> | Record<string, string>;

export class LightHeaders {
  /** Values by lower-case name, in the order they were appended. */
  private readonly map = new Map<string, string[]>();

  constructor(init?: LightHeadersInit | null) {
    if (init === undefined || init === null) return;
    if (typeof init !== "object") throw new TypeError("Headers: init must be an object");
    if (Symbol.iterator in init) {
      for (const pair of init as Iterable<Iterable<unknown>>) {
        const items = typeof pair === "string" ? [] : [...(pair as Iterable<unknown>)];
        if (items.length !== 2) throw new TypeError("Headers: each header of a list must be a [name, value] pair");
        this.append(items[0] as string, items[1] as string);
      }
      return;
    }
    for (const key of Object.keys(init)) this.append(key, (init as Record<string, string>)[key]!);
  }

  append(name: string, value: string): void {
    const key = headerName(name);
    const v = headerValue(value, key);
    const list = this.map.get(key);
    if (list) list.push(v);
    else this.map.set(key, [v]);
  }

  delete(name: string): void {
    this.map.delete(headerName(name));
  }

  get(name: string): string | null {
    const list = this.map.get(headerName(name));
    return list ? list.join(", ") : null;
  }

  getSetCookie(): string[] {
    return [...(this.map.get("set-cookie") ?? [])];
  }

  has(name: string): boolean {
    return this.map.has(headerName(name));
  }

  set(name: string, value: string): void {
    const key = headerName(name);
    this.map.set(key, [headerValue(value, key)]);
  }

  forEach(callback: (value: string, key: string, parent: LightHeaders) => void, thisArg?: unknown): void {
    for (const [key, value] of this.entries()) callback.call(thisArg, value, key, this);
  }

  *entries(): IterableIterator<[string, string]> {
    for (const key of [...this.map.keys()].sort()) {
      const list = this.map.get(key);
      if (!list) continue; // deleted by the caller while it iterates
      if (key === "set-cookie") for (const v of list) yield [key, v];
      else yield [key, list.join(", ")];
    }
  }

  *keys(): IterableIterator<string> {
    for (const [key] of this.entries()) yield key;
  }

  *values(): IterableIterator<string> {
    for (const [, value] of this.entries()) yield value;
  }

  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.entries();
  }

  get [Symbol.toStringTag](): string {
    return "Headers";
  }
}

/**
 * Makes `globalThis.Headers` the light class, if nothing has loaded Node's yet (its global is
 * still the getter that would load it); otherwise leaves the global as it is, since values of
 * both classes must not meet. Returns whether it did.
 */
export function installLightHeaders(): boolean {
  const d = Object.getOwnPropertyDescriptor(globalThis, "Headers");
  if (!d?.get) return false;
  Object.defineProperty(globalThis, "Headers", { value: LightHeaders, writable: true, configurable: true, enumerable: false });
  return true;
}
