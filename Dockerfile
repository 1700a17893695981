# pbts and its dev chain in containers (docs/OPERATIONS.md, "Docker"). From the repository root:
#
#   docker build -t pbts .                          # compiles pbts in a Rust image
#   docker build --target anvil -t pbts-anvil .     # anvil from npm, for compose.yaml's dev chain
#   docker compose up -d                            # both, and the factory deployed (compose.yaml)
#
# With the binaries already built on the host (no Rust or Node image needed: CI, air-gapped
# machines), put them in a directory of their own and use it as the build context:
#
#   mkdir -p ctx && cp target/release/pbts ctx/ \
#     && cp chain/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ctx/
#   docker build --build-arg BINARIES=prebuilt -f Dockerfile -t pbts ctx
#   docker build --build-arg BINARIES=prebuilt --target anvil -f Dockerfile -t pbts-anvil ctx
#   docker compose up -d --no-build
#
# No "# syntax=" line on purpose: it makes BuildKit fetch a frontend image from a registry.
# BuildKit (the default builder since Docker 23; DOCKER_BUILDKIT=1 before) never builds the
# stages a target does not need: the compile stages with BINARIES=prebuilt, Rust for anvil.

# "compile": build pbts and fetch anvil in the images below; "prebuilt": copy `pbts` (the pbts
# target) or `anvil` (the anvil target) from the build context.
ARG BINARIES=compile
ARG RUST_IMAGE=rust:1.95-bookworm
ARG NODE_IMAGE=node:22-bookworm-slim
ARG RUNTIME_IMAGE=debian:bookworm-slim

# Each binary from its own stages, so building one target never builds the other's compiler.
# The full rust image, not -slim: glommio's build script runs git and liburing's configure.
FROM ${RUST_IMAGE} AS pbts-compile
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p pbts-engine --bin pbts \
    && install -D -m 0755 target/release/pbts /out/pbts

FROM scratch AS pbts-prebuilt
COPY pbts /out/pbts

FROM pbts-${BINARIES} AS pbts-binary

# anvil as the tests use it: the @foundry-rs/anvil npm package, pinned by chain/'s lock file.
FROM ${NODE_IMAGE} AS anvil-compile
WORKDIR /chain
COPY chain/package.json chain/package-lock.json ./
# The binary comes in a per-platform optional package; where npm skips it (an older Node than
# the package's engines field asks for), the package's postinstall downloads it beside itself.
RUN npm ci --no-audit --no-fund --loglevel=error \
    && for f in node_modules/@foundry-rs/anvil-linux-*/bin/anvil node_modules/@foundry-rs/anvil/anvil; do \
         if [ -x "$f" ]; then install -D -m 0755 "$f" /out/anvil && break; fi; \
       done \
    && /out/anvil --version

FROM scratch AS anvil-prebuilt
COPY anvil /out/anvil

FROM anvil-${BINARIES} AS anvil-binary

# The dev chain for compose.yaml: anvil on 0.0.0.0:8545, chain id 31337, its state kept in
# /var/lib/anvil (a volume) so a deployed factory survives a restart.
FROM ${RUNTIME_IMAGE} AS anvil
RUN useradd --no-create-home --no-log-init --uid 10002 --user-group --home-dir /var/lib/anvil --shell /usr/sbin/nologin anvil \
    && install -d -o anvil -g anvil -m 0700 /var/lib/anvil
COPY --from=anvil-binary /out/anvil /usr/local/bin/anvil
USER anvil
WORKDIR /var/lib/anvil
VOLUME /var/lib/anvil
EXPOSE 8545/tcp
ENTRYPOINT ["anvil", "--host", "0.0.0.0", "--port", "8545"]
CMD ["--state", "/var/lib/anvil/state.json"]

# The tracker (the default target). Runs as the unprivileged user pbts (uid 10001), which owns
# the data volume; listens on 8000 (UDP and HTTP). SIGTERM writes the swarm snapshot: give
# `docker stop` time for it (compose.yaml's stop_grace_period).
FROM ${RUNTIME_IMAGE} AS pbts
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && useradd --no-create-home --no-log-init --uid 10001 --user-group --home-dir /var/lib/pbts --shell /usr/sbin/nologin pbts \
    && install -d -o pbts -g pbts -m 0700 /var/lib/pbts \
    && install -d -o pbts -g pbts -m 0755 /etc/pbts
COPY --from=pbts-binary /out/pbts /usr/local/bin/pbts
ENV PBTS_DATA_DIR=/var/lib/pbts \
    RUST_LOG=info
USER pbts
WORKDIR /var/lib/pbts
VOLUME /var/lib/pbts
EXPOSE 8000/tcp 8000/udp
# `pbts health` is the tracker's own client: GET /health and a UDP connect must both answer.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["pbts", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["pbts"]
CMD ["serve"]
