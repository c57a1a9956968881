/** Entry point of the action's post step (bundled to actions/exchange/dist/post.js). */
import { runStep } from "./runner";
import { completeStep } from "./steps";

runStep(completeStep);
