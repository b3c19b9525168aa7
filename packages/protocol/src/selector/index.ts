export * from "./selector.ts";
