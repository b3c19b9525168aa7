export { collectFacts, type CollectFactsOptions } from "./collect.ts";
export { reportFacts } from "./facts-reporter.ts";
