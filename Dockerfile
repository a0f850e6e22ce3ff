# Placeholder: the production image (multi-stage, non-root, tini, HEALTHCHECK) is built
# with the deployment work. This minimal image runs the gateway from source.
FROM node:24-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY config ./config
RUN npm ci && npm run build && npm prune --omit=dev
USER node
EXPOSE 8080
CMD ["node", "dist/main.js", "start", "--config", "/app/config/portcullis.example.yaml"]
