# unstick: build once (the dist profile: fat LTO, about 10 minutes on 2 cores), run as an
# unprivileged user in a slim image. `--build-arg UNSTICK_GIT_COMMIT=$(git rev-parse --short=12
# HEAD)` puts the commit in `unstick --version` (the build context has no .git).
FROM rust:1-bookworm AS build
ARG UNSTICK_GIT_COMMIT=
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo ./.cargo
COPY src ./src
RUN UNSTICK_GIT_COMMIT="$UNSTICK_GIT_COMMIT" cargo build --profile dist --locked \
    && strip target/dist/unstick

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 unstick
COPY --from=build /src/target/dist/unstick /usr/local/bin/unstick
COPY config /etc/unstick
USER unstick
EXPOSE 8080 9901
# Mount your own config over this file (docker run -v ./my.toml:/etc/unstick/unstick.toml:ro)
# or point UNSTICK_CONFIG elsewhere; secrets come from the environment (-e, --env-file).
ENV UNSTICK_CONFIG=/etc/unstick/unstick.toml
ENTRYPOINT ["unstick"]
CMD ["serve"]
