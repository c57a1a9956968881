/**
 * The decision context moved to src/authz/context.ts (docs/ARCHITECTURE.md, Operators and
 * authorization); these names stay importable from here for the CLI's simulation, the policy
 * tests and scripts/bench, which read them as the policies' vocabulary.
 */
export { DAYS, decisionContext, roleResource, timeContext, type TimeContext } from "../authz/context";
export { checkTimeZone } from "../core/time";
