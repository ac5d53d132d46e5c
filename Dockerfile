# Multi-stage build of the latchkey issuer.
# Not exercised in CI: no Docker engine runs on the build machines.
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p latchkey --bin latchkey -p downstream --bin downstream \
 && cp target/release/latchkey target/release/downstream /usr/local/bin/

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/latchkey latchkey \
 && mkdir -p /var/lib/latchkey/data /var/lib/latchkey/keys \
 && chown -R latchkey /var/lib/latchkey \
 && chmod 700 /var/lib/latchkey/keys
COPY --from=build /usr/local/bin/latchkey /usr/local/bin/downstream /usr/local/bin/
USER latchkey
WORKDIR /var/lib/latchkey
ENV LATCHKEY_LISTEN=0.0.0.0:8080 \
    LATCHKEY_DATA_DIR=/var/lib/latchkey/data \
    LATCHKEY_KEYS_DIR=/var/lib/latchkey/keys \
    LATCHKEY_LOG_FORMAT=json
EXPOSE 8080
# The embedded store's directories; with LATCHKEY_DATABASE_URL (PostgreSQL,
# see docker-compose.yml) they stay empty and the key-encryption key comes
# from a mounted file instead.
VOLUME ["/var/lib/latchkey/data", "/var/lib/latchkey/keys"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/latchkey"]
CMD ["serve"]
