# syntax=docker/dockerfile:1
# Healthplane container images: one multi-stage build, one small non-root image per binary.
#   docker build --target command-api -t ghcr.io/healthplane/command-api:0.1.0 .
# Targets: command-api, query-api, projector, schema-registry, audit-sealer, replay-tool.
# Every stage builds with the same Rust (RUST_VERSION, as rust-version in Cargo.toml); the
# dependency layer (cargo-chef) is rebuilt only when Cargo.toml/Cargo.lock change.

ARG RUST_VERSION=1.95.0
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM rust:${RUST_VERSION}-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: cached until the lock file changes.
RUN cargo chef cook --release --locked --workspace --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --workspace --bins \
    && mkdir -p /out \
    && for bin in command-api query-api projector schema-registry audit-sealer replay-tool; do \
         cp "target/release/$bin" /out/ && strip "/out/$bin"; \
       done

# distroless cc: glibc, libgcc, OpenSSL 3 and CA certificates; no shell, no package manager.
# uid/gid 65532 (nonroot). Pin it by digest in your registry mirror.
FROM ${RUNTIME_IMAGE} AS runtime
USER 65532:65532
ENV HEALTHPLANE_LOG_FORMAT=json

FROM runtime AS command-api
COPY --from=builder /out/command-api /usr/local/bin/command-api
ENV HEALTHPLANE_COMMAND_API_LISTEN=0.0.0.0:8082
EXPOSE 8082
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s CMD ["/usr/local/bin/command-api", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/command-api"]

FROM runtime AS query-api
COPY --from=builder /out/query-api /usr/local/bin/query-api
ENV HEALTHPLANE_QUERY_API_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s CMD ["/usr/local/bin/query-api", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/query-api"]

FROM runtime AS projector
COPY --from=builder /out/projector /usr/local/bin/projector
ENV HEALTHPLANE_PROJECTOR_LISTEN=0.0.0.0:9101
EXPOSE 9101
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s CMD ["/usr/local/bin/projector", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/projector"]

FROM runtime AS schema-registry
COPY --from=builder /out/schema-registry /usr/local/bin/schema-registry
ENV HEALTHPLANE_SCHEMA_REGISTRY_LISTEN=0.0.0.0:8081
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s CMD ["/usr/local/bin/schema-registry", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/schema-registry"]

FROM runtime AS audit-sealer
COPY --from=builder /out/audit-sealer /usr/local/bin/audit-sealer
ENV HEALTHPLANE_SEALER_LISTEN=0.0.0.0:9107
EXPOSE 9107
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s CMD ["/usr/local/bin/audit-sealer", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/audit-sealer"]

# The operators' and auditors' CLI (bootstrap, provision-postgres, audit, rebuild): a Job or a
# one-shot compose service, no health check.
FROM runtime AS replay-tool
COPY --from=builder /out/replay-tool /usr/local/bin/replay-tool
ENTRYPOINT ["/usr/local/bin/replay-tool"]
