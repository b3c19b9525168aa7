export * from "./identity.ts";
export * from "./openssh.ts";
