# syntax=docker/dockerfile:1
#
# redis-canary container image: a static-ish Rust binary on distroless (glibc, CA
# certificates, no shell, no package manager), running as the `nonroot` user (65532).
#
#   docker build -t redis-canary:0.1.0 --build-arg REVISION=$(git rev-parse --short HEAD) .
#   docker run --rm -p 9736:9736 redis-canary:0.1.0 --target cache=redis://host:6379
#
# Needs BuildKit (the default since Docker 23) for the cache mounts. Keep `target/` out
# of the build context with a .dockerignore: only Cargo.toml, Cargo.lock and src/ are
# copied.

# ---- build ---------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# Recorded in redis_canary_build_info{revision=...}.
ARG REVISION=unknown
ENV REDIS_CANARY_REVISION=${REVISION}

COPY Cargo.toml Cargo.lock ./
COPY src ./src

# --locked: exactly the dependency versions of Cargo.lock. The registry and target
# directories are cache mounts (kept between builds, not part of any layer), so the
# binary is copied out of target/ within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -D -m 0755 target/release/redis-canary /out/redis-canary

# ---- run -----------------------------------------------------------------------------
# cc-debian12: glibc and libgcc (what a Rust binary links dynamically) plus CA
# certificates for rediss:// targets, on the same Debian release as the builder.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /out/redis-canary /usr/local/bin/redis-canary

USER nonroot:nonroot
EXPOSE 9736
ENTRYPOINT ["/usr/local/bin/redis-canary"]
CMD ["run", "--config", "/etc/redis-canary/canary.toml"]
