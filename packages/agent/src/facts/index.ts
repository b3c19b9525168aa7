export { collectFacts, type CollectFactsOptions } from "./collect.ts";
