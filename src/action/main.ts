/** Entry point of the action's main step (bundled to actions/exchange/dist/main.js). */
import { runStep } from "./runner";
import { exchangeStep } from "./steps";

runStep(exchangeStep);
