# syntax=docker/dockerfile:1

# ---- build: full deps, compile TypeScript, then drop dev deps ----
FROM node:26-bookworm-slim AS build
WORKDIR /app
ENV NPM_CONFIG_UPDATE_NOTIFIER=false
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# The operators' console front end (bundled by esbuild into dist/console-web).
COPY web ./web
COPY scripts/build-console.mjs ./scripts/build-console.mjs
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

# ---- runtime: production deps + compiled output, non-root ----
FROM node:26-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build --chown=node:node /app/package.json /app/package-lock.json ./
COPY --from=build --chown=node:node /app/node_modules ./node_modules
COPY --from=build --chown=node:node /app/dist ./dist
COPY --chown=node:node config ./config
# Writable state (e.g. a generated signing key); mount a volume here to keep it.
RUN mkdir -p /app/.jitbroker /etc/jitbroker && chown node:node /app/.jitbroker
USER node
EXPOSE 8080
ENTRYPOINT ["node", "dist/cli/main.js"]
CMD ["serve", "--config", "/etc/jitbroker/broker.yaml"]
