export * from "./handshake.ts";
export * from "./join-string.ts";
export * from "./tokens.ts";
export * from "./rotation.ts";
