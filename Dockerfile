# Portcullis: the gateway as a container (see README "Deploying").
#
#   docker build -t portcullis .
#   docker run -p 8080:8080 -v portcullis-data:/data \
#     -e PUBLIC_URL=https://mcp.example.com -e UPSTREAM_URL=http://mcp-server:3000/mcp portcullis
#
# Config: /etc/portcullis/portcullis.yaml (mount yours over it). State: the /data volume.
# test/deploy/production-install.test.ts replays this file's npm commands, entrypoint and
# healthcheck outside Docker, as an unprivileged user, on every CI run.

# The Active LTS line. CI runs the test suite on it too (.ci/run reads this line).
ARG NODE_VERSION=26

FROM node:${NODE_VERSION}-trixie-slim AS build
# better-sqlite3 compiles from source when no prebuilt binary matches.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:${NODE_VERSION}-trixie-slim
# tini: PID 1 that forwards SIGTERM to node and reaps whatever an MCP server leaves behind.
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data /etc/portcullis && chown node:node /data
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY config/portcullis.container.yaml /etc/portcullis/portcullis.yaml
# The gateway runs unprivileged, so servers[].user/group (which need root to drop each stdio
# child to its own account) are refused here, and every stdio child shares the `node` account:
# it can read the gateway's environment through /proc/<gateway pid>/environ. Keep secrets
# that children must not see out of this container's environment, or derive an image that
# runs the gateway as root only to drop each child to its own account (README "stdio
# children: accounts"). Unprivileged is the simpler choice, and the safer one for the gateway.
USER node
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8080/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/dist/main.js"]
CMD ["start", "--config", "/etc/portcullis/portcullis.yaml"]
