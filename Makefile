# secrets-manager-agent — developer entry points.
#
#   make demo    build the agent, start a local Secrets Manager emulator (moto), fetch a secret
#   make test    unit tests (cargo test) + integration tests (pytest against moto)
#   make lint    rustfmt --check + clippy with warnings denied (every crate of the workspace)
#   make static  fully static musl release binary (needs musl-tools and the musl rustup target)
#   make static-ring  the same with the ring TLS provider: smallest, no post-quantum key exchange
#   make static-arm64  the same as `make static` for aarch64 (arm64), cross-compiled with Zig
#   make build   optimised release binary for the host (glibc)
#   make lambda-layer  Lambda layer zip (extensions/secrets-manager-agent) from the static binary;
#                      `make lambda-layer ARCH=arm64` the same for arm64 (make lambda-layer-arm64)
#   make clean   remove build output, the Python venv and logs

SHELL       := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

CARGO       ?= cargo
PYTHON      ?= python3
VENV        := .venv
BIN_NAME    := secrets-manager-agent
MUSL_TARGET := x86_64-unknown-linux-musl
STATIC_BIN  := target/$(MUSL_TARGET)/release/$(BIN_NAME)
DEBUG_BIN   := $(CURDIR)/target/debug/$(BIN_NAME)
# Extra arguments for pytest, e.g. `make test PYTEST_ARGS="-k cache -x"`.
PYTEST_ARGS ?=
# pytest-xdist workers for the integration tests; the tests mostly wait (for the
# agent, moto, a fake), so more workers than cores pay. PYTEST_WORKERS=0 runs
# them in one process.
PYTEST_WORKERS ?= 4

.PHONY: bench bench-compare bench-compare-2x bench-compare-3x soak bench-tools bench-floor
.PHONY: all build venv js-deps test unit-test integration-test lint static static-ring musl-build describe size-check demo clean lambda-layer
.PHONY: static-arm64 cross-venv budget lambda-layer-arm64 unknown-arch

all: build

build:
	$(CARGO) build --release
	@echo "built target/release/$(BIN_NAME)"

# The venv is rebuilt only when tests/requirements.txt changes (stamp file inside the venv).
venv: $(VENV)/.stamp

$(VENV)/.stamp: tests/requirements.txt
	@echo "==> installing tests/requirements.txt into $(VENV)"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	@touch $@

# The AWS SDK for JavaScript v3, a client the integration tests run (tests/js,
# tests/integration/test_sdk_clients.py): `npm ci` installs exactly what
# tests/js/package-lock.json pins into tests/js/node_modules, again only when
# package.json or the lock file changes (stamp file inside node_modules). Needs
# Node.js 20 or newer with npm, and the npm registry on the first run.
JS_DIR := tests/js

js-deps: $(JS_DIR)/node_modules/.stamp

$(JS_DIR)/node_modules/.stamp: $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || \
	  { echo "node/npm not found: the integration tests need Node.js 20+ with npm ($(JS_DIR))" >&2; exit 1; }
	@node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || \
	  { echo "Node.js $$(node --version) is too old: $(JS_DIR) needs 20 or newer" >&2; exit 1; }
	@echo "==> npm ci in $(JS_DIR) (the JavaScript SDK the tests run)"
	cd $(JS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

test: unit-test size-check integration-test

unit-test:
	@echo "==> cargo test (unit tests)"
	$(CARGO) test

# Two runs: every test but those marked `serial` on PYTEST_WORKERS workers
# (`--dist loadgroup` keeps an xdist_group on one worker), then the `serial`
# ones (they time answers or count threads) alone.
# pytest exits 5 when it collects no test; that is reported loudly but is not a failure.
integration-test: venv js-deps
	@echo "==> cargo build (debug binary for the integration tests)"
	$(CARGO) build
	@echo "==> pytest tests/integration against $(DEBUG_BIN), $(PYTEST_WORKERS) workers"
	@rc=0; AGENT_BIN="$(DEBUG_BIN)" $(VENV)/bin/pytest tests/integration -q -n $(PYTEST_WORKERS) \
		--dist loadgroup -m "not serial" $(PYTEST_ARGS) || rc=$$?; \
	echo "==> pytest tests/integration, the serial tests"; \
	rc2=0; AGENT_BIN="$(DEBUG_BIN)" $(VENV)/bin/pytest tests/integration -q -m serial $(PYTEST_ARGS) || rc2=$$?; \
	if [ $$rc -eq 5 ] && [ $$rc2 -eq 5 ]; then echo "WARNING: pytest collected no integration tests"; fi; \
	if [ $$rc -eq 5 ]; then rc=0; fi; \
	if [ $$rc2 -eq 5 ]; then rc2=0; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	exit $$rc2

# The layers between the crates are Cargo's to keep (and tests/layers.rs's, for
# what Cargo cannot see), so lint is the compiler's and rustfmt's.
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# aws-lc-sys compiles C code: for the musl target it needs musl-gcc (Debian package musl-tools).
# The default build must stay within SIZE_BUDGET bytes (4 MB; AWS's agents are 21-25 MB);
# `make test` checks it.
SIZE_BUDGET := 4000000
RING_DIR    := target/ring

static:
	@$(MAKE) --no-print-directory musl-build FEATURES= DIR=target
	@$(MAKE) --no-print-directory describe BIN=$(STATIC_BIN)

# The smallest build: ring instead of aws-lc-rs (no post-quantum key exchange).
static-ring:
	@$(MAKE) --no-print-directory musl-build FEATURES="--no-default-features --features ring" DIR=$(RING_DIR)
	@$(MAKE) --no-print-directory describe BIN=$(RING_DIR)/$(MUSL_TARGET)/release/$(BIN_NAME)

musl-build:
	@command -v musl-gcc >/dev/null || { echo "musl-gcc not found: apt-get install musl-tools" >&2; exit 1; }
	@rustup target list --installed 2>/dev/null | grep -qx $(MUSL_TARGET) || \
	  { echo "rust target missing: rustup target add $(MUSL_TARGET)" >&2; exit 1; }
	CC_x86_64_unknown_linux_musl=musl-gcc $(CARGO) build --release --target $(MUSL_TARGET) --target-dir $(DIR) $(FEATURES)

describe:
	@echo "static binary: $(CURDIR)/$(BIN)"
	@file $(BIN)
	@bytes=$$(stat -c %s $(BIN)); \
	  echo "size: $$bytes bytes ($$(awk -v b=$$bytes 'BEGIN { printf "%.2f", b / 1000000 }') MB)"
	@if file $(BIN) | grep -q 'dynamically linked'; then \
	  echo "ERROR: $(BIN) is dynamically linked" >&2; exit 1; fi
	@if ldd $(BIN) 2>&1 | grep -q '=>'; then \
	  echo "ERROR: ldd finds libraries for $(BIN)" >&2; exit 1; fi

# Fails when the default static build is larger than the budget.
size-check: static
	@$(MAKE) --no-print-directory budget BIN=$(STATIC_BIN)

budget:
	@bytes=$$(stat -c %s $(BIN)); \
	  if [ $$bytes -gt $(SIZE_BUDGET) ]; then \
	    echo "FAIL: $(BIN) is $$bytes bytes, over the $(SIZE_BUDGET)-byte budget" >&2; exit 1; \
	  else echo "size check: $$bytes bytes <= $(SIZE_BUDGET) budget"; fi

# ---- arm64 (aarch64-unknown-linux-musl) ---------------------------------------
# aws-lc-sys's C code needs a C compiler and libc headers for aarch64 musl. Debian
# bookworm has no such cross toolchain: gcc-aarch64-linux-gnu targets glibc, and an
# arm64 musl comes only as musl-dev:arm64 through `dpkg --add-architecture arm64`
# (a change to the machine's package setup) plus a gcc wrapper of our own to use it.
# Zig is one pip package that brings clang, lld and musl headers for aarch64, and
# cargo-zigbuild makes it the C compiler and the linker for this target. Measured on
# 2 cores shared with other builds: from nothing (fresh .venv-cross, Zig cache and
# target dir; aws-lc included) 1m46s, 2m19s under heavier load; after a change to
# src/ 1m00s; the pip install alone about 4 s. Both are pinned in
# scripts/cross-requirements.txt and live in .venv-cross (410 MB on disk, plus 78 MB
# of Zig cache in ~/.cache/zig), so nothing is installed system-wide.
# Rust's aarch64 musl target links `-static -no-pie` (x86_64's is static-pie), so the
# binary has no self-relocations and build.rs leaves out -z pack-relative-relocs.
# `make static-arm64` fails over the same SIZE_BUDGET as the x86_64 build.
ARM64_TARGET := aarch64-unknown-linux-musl
ARM64_BIN    := target/$(ARM64_TARGET)/release/$(BIN_NAME)
CROSS_VENV   := .venv-cross

cross-venv: $(CROSS_VENV)/.stamp

$(CROSS_VENV)/.stamp: scripts/cross-requirements.txt
	@echo "==> installing scripts/cross-requirements.txt into $(CROSS_VENV)"
	@test -x $(CROSS_VENV)/bin/python || $(PYTHON) -m venv $(CROSS_VENV)
	$(CROSS_VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/cross-requirements.txt
	@touch $@

# cargo-zigbuild finds Zig as `python3 -m ziglang`: the venv's python3 comes first on PATH.
static-arm64: cross-venv
	@rustup target list --installed 2>/dev/null | grep -qx $(ARM64_TARGET) || \
	  { echo "rust target missing: rustup target add $(ARM64_TARGET)" >&2; exit 1; }
	PATH="$(CURDIR)/$(CROSS_VENV)/bin:$$PATH" $(CARGO) zigbuild --release --target $(ARM64_TARGET) --target-dir target
	@$(MAKE) --no-print-directory describe BIN=$(ARM64_BIN)
	@$(MAKE) --no-print-directory budget BIN=$(ARM64_BIN)

# ARCH=x86_64 (the default) or arm64, as Lambda names them
# (`--compatible-architectures`); each has its own zip.
ARCH ?= x86_64
ifeq ($(ARCH),x86_64)
LAYER_ZIP   := target/lambda/secrets-manager-agent-layer.zip
LAYER_BUILD := static
LAYER_BIN   := $(STATIC_BIN)
else ifeq ($(ARCH),arm64)
LAYER_ZIP   := target/lambda/secrets-manager-agent-layer-arm64.zip
LAYER_BUILD := static-arm64
LAYER_BIN   := $(ARM64_BIN)
else
LAYER_BUILD := unknown-arch
endif

# An error only here, not at parse time: an ARCH in the environment (as some build
# systems set) must not break the other targets.
unknown-arch:
	@echo "ARCH=$(ARCH): use ARCH=x86_64 or ARCH=arm64" >&2; exit 1

# Lambda runs every executable in /opt/extensions as an extension; a layer's
# contents land in /opt, so the zip holds extensions/secrets-manager-agent.
lambda-layer: $(LAYER_BUILD)
	@mkdir -p target/lambda
	$(PYTHON) -c 'import sys, zipfile; \
	  info = zipfile.ZipInfo("extensions/$(BIN_NAME)"); info.external_attr = 0o100755 << 16; \
	  info.compress_type = zipfile.ZIP_DEFLATED; \
	  z = zipfile.ZipFile(sys.argv[1], "w"); z.writestr(info, open(sys.argv[2], "rb").read()); z.close()' \
	  $(LAYER_ZIP) $(LAYER_BIN)
	@echo "layer ($(ARCH)): $(CURDIR)/$(LAYER_ZIP) ($$(stat -c %s $(LAYER_ZIP)) bytes)"

lambda-layer-arm64:
	@$(MAKE) --no-print-directory lambda-layer ARCH=arm64

# scripts/demo.sh runs `make venv` itself, so it also works when started directly.
demo:
	scripts/demo.sh

clean:
	$(CARGO) clean
	rm -rf $(VENV) $(CROSS_VENV) logs .pytest_cache $(JS_DIR)/node_modules

# ---- benchmarks and soak (bench/; needs wrk: apt-get install -y wrk) --------
#   make bench          table: throughput, latency, start-up, memory, coalescing, size
#   make bench-compare  the same side by side with AWS's agent 2.1.0 and its 3.x successor
#                       (aws_workload_credentials_provider 3.1.2), in one run; each is
#                       installed into target/ once (about 6 minutes of compiling each)
#   make bench-compare-2x / bench-compare-3x  against one of them only
#   make soak           SOAK_SECONDS (default 300) of wrk under injected faults; fails on
#                       any non-200 or on RSS/thread growth. Not part of `make test`.
# The binary measured is the static one users ship; BENCH_BIN=... measures another.
AWS_AGENT_DIR := target/aws-agent
AWS_AGENT     := $(AWS_AGENT_DIR)/bin/aws_secretsmanager_agent
AWS_AGENT_3X_DIR := target/aws-agent-3x
AWS_AGENT_3X  := $(AWS_AGENT_3X_DIR)/bin/aws-workload-credentials-provider
SOAK_SECONDS  ?= 300
BENCH_BIN     ?= $(CURDIR)/$(STATIC_BIN)
BENCH_FLOOR   := $(CURDIR)/target/$(MUSL_TARGET)/release/examples/bench_floor

bench-tools:
	@command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }

# Every bench also runs the floor (bench/floor.rs), a server that only reads and
# writes, in the same rounds. Built beside the static binary, so that only it (and the
# dev-dependencies examples may use) compiles: about 20 s.
bench-floor: static
	CC_x86_64_unknown_linux_musl=musl-gcc $(CARGO) build --release --target $(MUSL_TARGET) --example bench_floor

# BENCH_OTHER=/path/to/other-agent (and BENCH_OTHER_ARGS="sm start --config {config}" for
# aws_workload_credentials_provider) adds a side-by-side column with the ratio.
bench: bench-tools bench-floor static
	BENCH_BIN=$(BENCH_BIN) BENCH_FLOOR=$(BENCH_FLOOR) $(PYTHON) bench/bench.py

bench-compare: bench-tools bench-floor static $(AWS_AGENT) $(AWS_AGENT_3X)
	BENCH_BIN=$(BENCH_BIN) BENCH_FLOOR=$(BENCH_FLOOR) \
	  BENCH_OTHER=$(CURDIR)/$(AWS_AGENT) BENCH_OTHER_NAME=aws-2.1.0 \
	  BENCH_OTHER2=$(CURDIR)/$(AWS_AGENT_3X) BENCH_OTHER2_NAME=aws-3.1.2 \
	  BENCH_OTHER2_ARGS="sm start --config {config}" $(PYTHON) bench/bench.py

bench-compare-2x: bench-tools bench-floor static $(AWS_AGENT)
	BENCH_BIN=$(BENCH_BIN) BENCH_FLOOR=$(BENCH_FLOOR) BENCH_OTHER=$(CURDIR)/$(AWS_AGENT) \
	  BENCH_OTHER_NAME=aws-2.1.0 $(PYTHON) bench/bench.py

$(AWS_AGENT):
	$(CARGO) install aws_secretsmanager_agent --version 2.1.0 --locked --root $(AWS_AGENT_DIR)

bench-compare-3x: bench-tools bench-floor static $(AWS_AGENT_3X)
	BENCH_BIN=$(BENCH_BIN) BENCH_FLOOR=$(BENCH_FLOOR) BENCH_OTHER=$(CURDIR)/$(AWS_AGENT_3X) \
	  BENCH_OTHER_NAME=aws-3.1.2 BENCH_OTHER_ARGS="sm start --config {config}" $(PYTHON) bench/bench.py

# Compiling it takes about 6 minutes on 2 cores.
$(AWS_AGENT_3X):
	$(CARGO) install aws_workload_credentials_provider --version 3.1.2 --locked --root $(AWS_AGENT_3X_DIR)

soak: bench-tools static
	SOAK_BIN=$(BENCH_BIN) SOAK_SECONDS=$(SOAK_SECONDS) $(PYTHON) bench/soak.py

# ---- fuzzing (fuzz/; cargo install cargo-fuzz; stable Rust via RUSTC_BOOTSTRAP) ----
#   make fuzz  runs each target for FUZZ_SECONDS (default 600). Not part of `make test`.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS := http_request query config upstream_response

.PHONY: fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz not found: cargo install cargo-fuzz" >&2; exit 1; }
	@for t in $(FUZZ_TARGETS); do \
	  echo "==> fuzz $$t for $(FUZZ_SECONDS) s"; \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done
