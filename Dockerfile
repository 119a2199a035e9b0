# syntax=docker/dockerfile:1
# One image for the gateway, the worker and the demo services (fleet, traffic); the command picks.

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# The sources are not here yet: `prepare` (the build) runs below, once they are.
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY . .
RUN npm run build

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=4000 \
    BOO_DATA_DIR=/app/data \
    BOO_CONFIG=/app/config/gateway.example.yaml
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY --from=build /app/migrations ./migrations
# The Lua scripts of the breaker and capacity stores: tsc emits no .lua into dist/, and the code finds them here.
COPY --from=build /app/src/breakers/commands ./src/breakers/commands
COPY --from=build /app/src/capacity/commands ./src/capacity/commands
COPY config ./config
RUN mkdir -p /app/data && chown node:node /app/data
USER node
EXPOSE 4000 9465
# The image runs the compiled entry directly (not `npm start`) so SIGTERM reaches node, not npm.
CMD ["node", "dist/src/main.js"]
