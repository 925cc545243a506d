# syntax=docker/dockerfile:1
# One build, three targets:
#   docker build --target agent    -t tcplat-agent .      eBPF probe + agent (runs privileged, see docker-compose.yml)
#   docker build --target renderer -t tcplat-renderer .   renderer + Matplotlib workers
#   docker build --target plugins  --output type=local,dest=. .   writes dist/ (both Grafana plugins) to the host
# Both services run the one CLI: ENTRYPOINT /app/bin/tcplat (its #! line carries node's flags), the subcommand is the CMD.

ARG NODE_VERSION=20

# ---- build: TypeScript, plugins, eBPF probe -------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev libelf-dev zlib1g-dev bpftool make pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits reuse the npm layer.
COPY package.json package-lock.json ./
COPY pkg/core/package.json pkg/core/
COPY agent/package.json agent/
COPY renderer/package.json renderer/
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build
# The probe is CO-RE: vmlinux.h comes from the build machine's BTF (/sys/kernel/btf/vmlinux, visible in
# the build container), and the binary relocates itself on any BTF-enabled kernel >= 4.16 at load time.
RUN make -C bpf tcplat-probe
# Production dependencies only (fastify, yaml, better-sqlite3); workspace links to pkg/core stay. Install
# scripts are skipped except better-sqlite3's: the agent's spool needs its native module.
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts && npm rebuild better-sqlite3

# ---- plugins: just the built plugin folders (for hosts without Node) --------------------------------
FROM scratch AS plugins
COPY --from=build /src/dist/ /dist/

# ---- runtime base: Node + the CLI + pkg/core ---------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/bin ./bin
COPY --from=build /src/pkg/core/package.json pkg/core/
COPY --from=build /src/pkg/core/dist pkg/core/dist
ENTRYPOINT ["/app/bin/tcplat"]

# ---- agent: probe + agent (root: it loads eBPF programs) ---------------------------------------------
FROM runtime AS agent
RUN apt-get update \
 && apt-get install -y --no-install-recommends libbpf1 libelf1 zlib1g \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/agent/package.json agent/
COPY --from=build /src/agent/dist agent/dist
# The agent's default --probe is bpf/tcplat-probe of the install: /app/bpf/tcplat-probe.
COPY --from=build /src/bpf/tcplat-probe bpf/tcplat-probe
VOLUME /var/lib/tcplat/spool
EXPOSE 7070
CMD ["agent"]

# ---- renderer: service + Python Matplotlib workers (unprivileged) ------------------------------------
FROM runtime AS renderer
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-matplotlib python3-numpy tzdata \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/renderer/package.json renderer/
COPY --from=build /src/renderer/dist renderer/dist
COPY --from=build /src/renderer/python renderer/python
# Matplotlib writes its font cache here; the user has no home.
ENV MPLCONFIGDIR=/tmp/matplotlib
USER node
EXPOSE 7071
CMD ["renderer"]
