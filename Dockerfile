# syntax=docker/dockerfile:1
# jitbroker on Node 26. `docker compose up --build` runs it (docker-compose.yml); alone:
#   docker build -t jitbroker . && docker run --rm jitbroker --version

# ---- build: the committed lock file, compile TypeScript, then drop dev dependencies ----
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

# ---- runtime: production dependencies + compiled output, non-root ----
FROM node:26-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build --chown=node:node /app/package.json /app/package-lock.json ./
COPY --from=build --chown=node:node /app/node_modules ./node_modules
COPY --from=build --chown=node:node /app/dist ./dist
COPY --chown=node:node config ./config
# `jitbroker` on PATH (the package's bin), for `docker compose exec broker jitbroker ...`.
# State (signing key, dev issuer, dev config) goes to /app/.jitbroker: mount a volume there.
RUN ln -s /app/dist/cli/main.js /usr/local/bin/jitbroker \
 && chmod 0755 /app/dist/cli/main.js \
 && mkdir -p /app/.jitbroker /etc/jitbroker \
 && chown node:node /app/.jitbroker
ENV JITBROKER_HOME=/app/.jitbroker
USER node
EXPOSE 8080
ENTRYPOINT ["jitbroker"]
CMD ["serve", "--config", "/etc/jitbroker/broker.yaml"]
