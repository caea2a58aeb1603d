# secrets-manager-agent container image: the static musl binary on `scratch`.
#
#   docker build -t secrets-manager-agent .                            # the host's platform
#   docker build --platform linux/arm64 -t secrets-manager-agent .    # or linux/amd64
#   docker buildx build --platform linux/amd64,linux/arm64 -t REPO/secrets-manager-agent --push .
#
# The image is linux/amd64 (x86_64-unknown-linux-musl, like `make static`) or linux/arm64
# (aarch64-unknown-linux-musl, like `make static-arm64`), as --platform asks (BuildKit's
# TARGETARCH). The build stage runs on that platform too and compiles natively with
# Debian's musl-gcc: on a host of the other architecture Docker emulates it with qemu
# (binfmt), which works but is many times slower; `make static-arm64` cross-compiles
# instead. The image contains two files: /secrets-manager-agent (about 3.5 MB on
# amd64, 2.9 MB on arm64) and its config
# /etc/secrets-manager-agent/config.toml (examples/container-config.toml: logs to
# stdout/stderr, port 2773). There is no shell, libc or CA bundle: the binary is
# static and has Mozilla's root certificates compiled in.
#
# Networking. The agent binds 127.0.0.1:2773 only, also inside a container, so
# `docker run -p 2773:2773` does not reach it. Run it as a sidecar that shares the
# application's network namespace: the containers of an ECS task in awsvpc mode
# (examples/ecs-task-definition.json), the containers of a Kubernetes pod
# (examples/kubernetes-pod.yaml), or `docker run --network container:APP ...`.
# EXPOSE below only documents the port.
#
# Token. The agent reads the SSRF token once at start from AWS_TOKEN; the image sets
# AWS_TOKEN=file:///var/run/awssmatoken/token, so mount a directory holding a file
# `token` at /var/run/awssmatoken (written by an init container, or a Secret) and
# give the application the same file. A plain `-e AWS_TOKEN=value` works too.
#
# Credentials and region come from the usual places: the ECS task role, EKS IRSA or
# Pod Identity, AWS_REGION, ... (docs/credentials.md).
#
# Stopping. The agent handles SIGTERM and SIGINT itself (exit status 0), so as the
# container's PID 1 it stops at once on `docker stop`; no init process is needed.
#
# Local try-out, next to an application container named `app`:
#   docker run -d --name app -v awssmatoken:/var/run/awssmatoken busybox sh -c \
#     'od -An -vtx1 -N32 /dev/urandom | tr -d " \n" > /var/run/awssmatoken/token;
#      chmod 0444 /var/run/awssmatoken/token; sleep infinity'
#   docker run -d --network container:app -v awssmatoken:/var/run/awssmatoken:ro \
#     -e AWS_REGION -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY -e AWS_SESSION_TOKEN \
#     secrets-manager-agent
#   docker exec app sh -c 'wget -qO- --header "X-Aws-Parameters-Secrets-Token: $(cat \
#     /var/run/awssmatoken/token)" "http://127.0.0.1:2773/secretsmanager/get?secretId=MySecret"'

# The Rust the project is built and tested with (CI's); 1.94.1 is the least that
# builds it.
ARG RUST_VERSION=1.95.0

# ---------------------------------------------------------------- build stage
FROM rust:${RUST_VERSION}-bookworm AS build

# The platform asked for (--platform; BuildKit sets TARGETARCH, the classic builder
# does not: then the host's) picks the Rust target, written to /rust-target for the
# RUNs below. This stage runs on that platform, so musl-gcc compiles aws-lc-sys's C
# code for it; a stage whose CPU differs from the target (a builder that ignores
# --platform) would compile that C code for the wrong CPU: fail early instead.
ARG TARGETARCH
RUN arch="${TARGETARCH:-$(dpkg --print-architecture)}"; \
    case "$arch" in \
      amd64) target=x86_64-unknown-linux-musl ;; \
      arm64) target=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported platform linux/$arch: build linux/amd64 or linux/arm64" >&2; exit 1 ;; \
    esac; \
    [ "$(uname -m)" = "${target%%-*}" ] || { echo "linux/$arch needs a ${target%%-*} build stage, not $(uname -m)" >&2; exit 1; }; \
    echo "$target" > /rust-target
# musl-gcc for aws-lc-sys's C code (`file` checks the result).
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools file \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add "$(cat /rust-target)"
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CC_aarch64_unknown_linux_musl=musl-gcc \
    CARGO_TERM_COLOR=never

WORKDIR /src

# Dependencies first, with placeholder crates, so that a change to the agent's
# code does not rebuild them (aws-lc-sys alone takes minutes).
COPY Cargo.toml Cargo.lock ./
COPY crates/os/Cargo.toml crates/os/
COPY crates/core/Cargo.toml crates/core/
COPY crates/http/Cargo.toml crates/http/
COPY crates/aws/Cargo.toml crates/aws/
COPY crates/cache/Cargo.toml crates/cache/
RUN for c in crates/*/; do mkdir -p "$c/src" && touch "$c/src/lib.rs"; done \
 && mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && mkdir bench && echo 'fn main() {}' > bench/floor.rs \
 && cargo build --release --locked --target "$(cat /rust-target)" \
 && rm -rf src crates bench

# build.rs: link options of the static binary (packed relocations on x86_64, about
# 150 KB smaller).
COPY build.rs ./
COPY crates ./crates
COPY src ./src
COPY bench/floor.rs ./bench/floor.rs
# touch: the copied files may be older than the placeholder build. The binary is
# copied to /out, one path for every platform, for the final stage's COPY.
RUN touch src/main.rs src/lib.rs crates/*/src/lib.rs \
 && cargo build --release --locked --target "$(cat /rust-target)" \
 && bin="target/$(cat /rust-target)/release/secrets-manager-agent" \
 && file "$bin" \
 && ! file "$bin" | grep -q 'dynamically linked' \
 && mkdir /out && cp "$bin" /out/secrets-manager-agent

# ---------------------------------------------------------------- final image
FROM scratch

LABEL org.opencontainers.image.title="secrets-manager-agent" \
      org.opencontainers.image.description="Local caching agent for AWS Secrets Manager on 127.0.0.1:2773 (drop-in for AWS's Secrets Manager Agent)" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /out/secrets-manager-agent /secrets-manager-agent
COPY examples/container-config.toml /etc/secrets-manager-agent/config.toml

# Not root: the distroless "nonroot" ids. Numeric, since scratch has no /etc/passwd.
# The agent writes nothing (logs go to stdout/stderr), so a read-only root
# filesystem is fine.
USER 65532:65532

# Loopback only: reachable from containers sharing this network namespace.
EXPOSE 2773

# The token file: mount it, e.g. from an emptyDir, a task volume or a Secret.
ENV AWS_TOKEN=file:///var/run/awssmatoken/token

# The agent's own client asks /ping over loopback: no shell or curl needed.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/secrets-manager-agent", "ping", "--config", "/etc/secrets-manager-agent/config.toml"]

ENTRYPOINT ["/secrets-manager-agent"]
CMD ["--config", "/etc/secrets-manager-agent/config.toml"]
