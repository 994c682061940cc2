# Multi-stage build of the consentry binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin consentry

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 consentry
COPY --from=build /src/target/release/consentry /usr/local/bin/consentry
COPY policies /etc/consentry/policies
USER consentry
WORKDIR /var/lib/consentry
ENV CONSENTRY_LISTEN=0.0.0.0:8080 \
    CONSENTRY_DATA_DIR=/var/lib/consentry \
    CONSENTRY_POLICIES=/etc/consentry/policies \
    CONSENTRY_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["consentry"]
CMD ["serve"]
