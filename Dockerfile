# syntax=docker/dockerfile:1
# Multi-stage build: cargo-chef caches the dependency layer, the runtime image is distroless and
# runs as a non-root user. Probes (/livez, /readyz) are the orchestrator's job: no HEALTHCHECK.

FROM rust:1.95-slim-bookworm AS chef
WORKDIR /app
RUN cargo install cargo-chef --locked --version 0.1.73

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --profile production --locked --recipe-path recipe.json
COPY . .
RUN cargo build --profile production --locked --bin elicit \
    && mkdir -p /app/data

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
WORKDIR /app
COPY --from=builder /app/target/production/elicit /usr/local/bin/elicit
COPY --from=builder /app/config /app/config
COPY --from=builder --chown=65532:65532 /app/data /app/data
ENV ELICIT_ENV=production \
    ELICIT_HOST=0.0.0.0 \
    ELICIT_PORT=8080
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/elicit"]
CMD ["serve"]
