# The keybound issuer as a container image (docs/operations.md, "Container
# image"): `docker build -t keybound .` in the repository.

# Build with the toolchain of Cargo.toml's rust-version, from Cargo.lock.
FROM rust:1.95-trixie AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin keybound

# Run on the same Debian release, as a user of its own, with nothing but
# the binary and the CA certificates (for a database, Redis or peer issuer
# reached over TLS).
FROM debian:trixie-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/keybound --shell /usr/sbin/nologin keybound \
    && install -d -o keybound -g keybound -m 0700 /var/lib/keybound
COPY --from=build /src/target/release/keybound /usr/local/bin/keybound
USER 10001:10001
WORKDIR /var/lib/keybound
# The data dir (SQLite database, root.key): mount a volume here. Every other
# setting is a KEYBOUND_* variable given at `docker run` (or a --config file
# mounted read-only); KEYBOUND_ISSUER_ID is the public https URL.
ENV KEYBOUND_DATA_DIR=/var/lib/keybound \
    KEYBOUND_LISTEN=0.0.0.0:8080 \
    KEYBOUND_METRICS_LISTEN=0.0.0.0:9090 \
    KEYBOUND_LOG_FORMAT=json
VOLUME ["/var/lib/keybound"]
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/keybound"]
CMD ["serve"]
