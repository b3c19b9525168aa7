/**
 * How many cases a property test (fast-check) runs. `npm test` runs a small bounded number so
 * each property file takes a few seconds; `FLOTILLA_PROPERTY_RUNS=N` runs N cases of every
 * property instead, to search longer for bugs. fast-check prints the seed and path of a failure;
 * `FLOTILLA_PROPERTY_SEED=<seed>` (and `FLOTILLA_PROPERTY_PATH=<path>`) replays exactly that case.
 * Kept free of vitest and fast-check imports: the result is a plain fast-check `Parameters`.
 */

/** Parameters for `fc.assert(property, propertyRuns(n))`. */
export interface PropertyRunParameters {
  numRuns: number;
  seed?: number;
  path?: string;
  endOnFailure?: boolean;
}

/**
 * `defaultRuns` cases (pick it so the property stays fast), or FLOTILLA_PROPERTY_RUNS when set;
 * with FLOTILLA_PROPERTY_SEED, the seed (and path) of a failure to replay.
 */
export function propertyRuns(defaultRuns = 100, env: Record<string, string | undefined> = process.env): PropertyRunParameters {
  const params: PropertyRunParameters = { numRuns: defaultRuns };
  const runs = env.FLOTILLA_PROPERTY_RUNS;
  if (runs !== undefined && runs !== "") {
    if (!/^\d{1,9}$/.test(runs) || Number(runs) < 1) throw new Error(`FLOTILLA_PROPERTY_RUNS must be a positive number of runs, not ${JSON.stringify(runs)}`);
    params.numRuns = Number(runs);
  }
  const seed = env.FLOTILLA_PROPERTY_SEED;
  if (seed !== undefined && seed !== "") {
    if (!/^-?\d{1,10}$/.test(seed)) throw new Error(`FLOTILLA_PROPERTY_SEED must be an integer seed, not ${JSON.stringify(seed)}`);
    params.seed = Number(seed);
    const path = env.FLOTILLA_PROPERTY_PATH;
    if (path) {
      params.path = path;
      params.endOnFailure = true;
    }
  }
  return params;
}

/**
 * A per-case time limit that grows with the run count, for tests' `timeout` argument: `base` ms
 * for the default runs, scaled up when FLOTILLA_PROPERTY_RUNS asks for more.
 */
export function propertyTimeout(base: number, defaultRuns: number, env: Record<string, string | undefined> = process.env): number {
  const runs = propertyRuns(defaultRuns, env).numRuns;
  return Math.max(base, Math.ceil((base * runs) / defaultRuns));
}
