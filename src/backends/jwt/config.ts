/**
 * The jwt backend's configuration (docs/ARCHITECTURE.md, How to add a config section): the role
 * section `roles[].jwt` and the backend section `backends.jwt`. src/config/schema.ts composes them.
 */
import { z } from "zod";

export const jwtRole = z.strictObject({ audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]), scope: z.string().optional() });

/** The broker's signing key, created on first start when absent. */
export const jwtBackend = z.strictObject({ signing_key_file: z.string().min(1).default(".jitbroker/signing-key.json") });
