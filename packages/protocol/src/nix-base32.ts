/**
 * Nix's base32: its own alphabet and bit order, as in `sha256:<base32>` hashes, store path hash
 * parts and NAR file names. Follows Nix's libutil/hash.cc.
 */

const BASE32 = "0123456789abcdfghijklmnpqrsvwxyz";

/** `bytes` in nix-base32. */
export function toNixBase32(bytes: Uint8Array): string {
  const len = Math.floor((bytes.length * 8 - 1) / 5) + 1;
  let out = "";
  for (let n = len - 1; n >= 0; n--) {
    const b = n * 5;
    const i = Math.floor(b / 8);
    const j = b % 8;
    const c = (bytes[i]! >> j) | (i >= bytes.length - 1 ? 0 : bytes[i + 1]! << (8 - j));
    out += BASE32[c & 0x1f];
  }
  return out;
}

/** Parses nix-base32 of `size` bytes; throws on a bad character or length. */
export function fromNixBase32(text: string, size: number): Buffer {
  const len = Math.floor((size * 8 - 1) / 5) + 1;
  if (text.length !== len) throw new Error(`expected ${len} base32 characters`);
  const out = Buffer.alloc(size);
  for (let n = 0; n < len; n++) {
    const digit = BASE32.indexOf(text[len - n - 1]!);
    if (digit < 0) throw new Error("invalid base32 character");
    const b = n * 5;
    const i = Math.floor(b / 8);
    const j = b % 8;
    out[i]! |= (digit << j) & 0xff;
    if (i < size - 1) out[i + 1]! |= digit >> (8 - j);
    else if (digit >> (8 - j)) throw new Error("invalid base32 padding");
  }
  return out;
}
