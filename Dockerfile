# unstick: build once, run as an unprivileged user in a slim image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY src ./src
RUN cargo build --release --locked && strip target/release/unstick

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 unstick
COPY --from=build /src/target/release/unstick /usr/local/bin/unstick
COPY config /etc/unstick
USER unstick
EXPOSE 8080 9901
ENTRYPOINT ["unstick"]
CMD ["serve", "--config", "/etc/unstick/unstick.toml"]
