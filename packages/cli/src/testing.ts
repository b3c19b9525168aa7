/**
 * What whole-system tests use of the CLI's signing code, to build and inspect TUF metadata as an
 * admin would (`@flotilla/cli/testing`); not part of the program's surface.
 */
export { nextRoot, signMetadata } from "./signing/metadata.ts";
export { SignedTargets } from "./signing/signed-targets.ts";
