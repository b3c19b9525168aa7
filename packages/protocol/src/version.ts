/**
 * The version of every Flotilla role built from this tree. Its one home is the root
 * package.json; the bundles (scripts/build.mjs, scripts/package.mjs) embed it at build time.
 */
import rootPackage from "../../../package.json" with { type: "json" };

export const VERSION: string = rootPackage.version;
