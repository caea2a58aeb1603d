#!/usr/bin/env bash
# `make demo`: run the agent against a local AWS emulator (moto) and fetch a secret and a parameter.
#
# Steps: make the Python venv (moto, boto3) if needed; build the agent (debug profile: it compiles
# much faster than the LTO release profile, and behaves the same); start moto_server on a free
# loopback port; create the secret `demo/db-password` and the parameter `/demo/db-host` in it
# with boto3; generate a random token; start the agent with a temporary config (port picked by
# the OS); fetch the secret with curl through both HTTP paths, and the parameter; stop
# everything on exit.
#
# Environment: DEMO_PROFILE=release to build and run the release binary instead;
#              AGENT_BIN=/path/to/secrets-manager-agent to skip the build and use that binary.
# Only loopback addresses are used; no real AWS account or credentials are involved.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
SECRET_ID="demo/db-password"
WAIT_SECONDS=30

if [ -t 1 ]; then BOLD=$'\033[1m' RESET=$'\033[0m'; else BOLD="" RESET=""; fi
step() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$RESET"; }
die() { printf '\nERROR: %s\n' "$*" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sma-demo.XXXXXX")"
MOTO_PID=""
AGENT_PID=""
cleanup() {
  local rc=$?
  for pid in "$AGENT_PID" "$MOTO_PID"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      # Bounded wait for a clean exit, then force.
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [ $rc -ne 0 ]; then
    for f in agent.stderr agent.stdout moto.log; do
      if [ -s "$WORK/$f" ]; then
        printf '\n--- %s (last 40 lines) ---\n' "$f" >&2
        tail -n 40 "$WORK/$f" >&2
      fi
    done
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v curl >/dev/null || die "curl is needed (apt-get install curl)"

# Fake credentials, pinned region, and nothing from the caller's AWS setup that could leak in.
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_ENDPOINT_URL AWS_CONTAINER_AUTHORIZATION_TOKEN \
      AWS_USE_FIPS_ENDPOINT AWS_USE_DUALSTACK_ENDPOINT AWS_IGNORE_CONFIGURED_ENDPOINT_URLS
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_CONFIG_FILE=/dev/null

step "Python venv with moto (make venv)"
make --no-print-directory -s venv
[ -x "$VENV/bin/moto_server" ] || die "$VENV/bin/moto_server missing: is moto[server] in tests/requirements.txt?"

if [ -n "${AGENT_BIN:-}" ]; then
  step "using AGENT_BIN=$AGENT_BIN"
elif [ "${DEMO_PROFILE:-debug}" = release ]; then
  step "building the agent (cargo build --release)"
  cargo build --release
  AGENT_BIN="$ROOT/target/release/secrets-manager-agent"
else
  step "building the agent (cargo build, debug profile: faster to compile than release)"
  cargo build
  AGENT_BIN="$ROOT/target/debug/secrets-manager-agent"
fi
[ -x "$AGENT_BIN" ] || die "agent binary not found at $AGENT_BIN"

free_port() {
  "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

step "starting moto_server (local Secrets Manager emulator)"
MOTO_PORT="$(free_port)"
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
MOTO_URL="http://127.0.0.1:$MOTO_PORT"
for i in $(seq 1 $((WAIT_SECONDS * 10))); do
  kill -0 "$MOTO_PID" 2>/dev/null || die "moto_server exited early"
  curl -s -o /dev/null --max-time 1 "$MOTO_URL/moto-api/" && break
  [ "$i" -eq $((WAIT_SECONDS * 10)) ] && die "moto_server did not answer on $MOTO_URL within ${WAIT_SECONDS}s"
  sleep 0.1
done
echo "moto_server pid $MOTO_PID on $MOTO_URL"

step "creating secret $SECRET_ID in moto (boto3)"
SECRET_VALUE='{"username":"app","password":"s3cr3t-demo-only"}'
MOTO_URL="$MOTO_URL" SECRET_ID="$SECRET_ID" SECRET_VALUE="$SECRET_VALUE" "$VENV/bin/python" - <<'PY'
import os, boto3
sm = boto3.client("secretsmanager", endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1")
r = sm.create_secret(Name=os.environ["SECRET_ID"], SecretString=os.environ["SECRET_VALUE"])
print("created", r["ARN"])
ssm = boto3.client("ssm", endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1")
ssm.put_parameter(Name="/demo/db-host", Value="db.demo.internal", Type="String")
print("created parameter /demo/db-host")
PY

step "generating a random token ($AGENT_BIN token)"
TOKEN="$("$AGENT_BIN" token)"
echo "token: ${TOKEN:0:8}... (${#TOKEN} characters)"

CONFIG="$WORK/agent.toml"
cat >"$CONFIG" <<EOF
# Written by scripts/demo.sh
http_port = 0               # let the OS pick a free port
log_to_file = false         # log to stderr
log_level = "INFO"
region = "us-east-1"
validate_credentials = false
EOF
step "starting the agent ($AGENT_BIN --config $CONFIG)"
sed 's/^/    /' "$CONFIG"
(cd "$WORK" && exec env AWS_TOKEN="$TOKEN" AWS_ENDPOINT_URL_SECRETS_MANAGER="$MOTO_URL" \
  AWS_ENDPOINT_URL_SSM="$MOTO_URL" \
  "$AGENT_BIN" --config "$CONFIG" >"$WORK/agent.stdout" 2>"$WORK/agent.stderr") &
AGENT_PID=$!
PORT=""
for i in $(seq 1 $((WAIT_SECONDS * 10))); do
  if ! kill -0 "$AGENT_PID" 2>/dev/null; then
    wait "$AGENT_PID" && rc=0 || rc=$?
    AGENT_PID=""
    die "the agent exited with status $rc before listening"
  fi
  line="$(grep -m1 'listening on' "$WORK/agent.stdout" 2>/dev/null || true)"
  if [ -n "$line" ]; then
    PORT="$(sed -nE 's#.*listening on http://127\.0\.0\.1:([0-9]+).*#\1#p' <<<"$line")"
    break
  fi
  [ "$i" -eq $((WAIT_SECONDS * 10)) ] && die "the agent did not print 'listening on' within ${WAIT_SECONDS}s"
  sleep 0.1
done
[ -n "$PORT" ] || die "could not read the port from: $line"
echo "$line"

run() {
  # Print the command (token abbreviated), then run it (bounded by curl's --max-time).
  local arg shown=""
  for arg in "$@"; do
    arg="${arg//$TOKEN/\$TOKEN}"
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=%-]+$ ]]; then shown+=" $arg"; else shown+=" \"$arg\""; fi
  done
  printf '\n$%s\n' "$shown"
  "$@"
  echo
}

step "fetching the secret through the agent"
echo "(TOKEN is the value the agent read from AWS_TOKEN at start)"
run curl -sS --max-time 15 "http://127.0.0.1:$PORT/ping"
run curl -sS --max-time 15 -H "X-Aws-Parameters-Secrets-Token: $TOKEN" \
  "http://127.0.0.1:$PORT/secretsmanager/get?secretId=$SECRET_ID"
run curl -sS --max-time 15 -H "X-Aws-Parameters-Secrets-Token: $TOKEN" \
  "http://127.0.0.1:$PORT/v1/$SECRET_ID"
run curl -sS --max-time 15 -H "X-Aws-Parameters-Secrets-Token: $TOKEN" \
  "http://127.0.0.1:$PORT/systemsmanager/parameters/get?name=/demo/db-host"

step "the same request without the token is refused"
run curl -sS --max-time 15 -w '  (HTTP %{http_code})' \
  "http://127.0.0.1:$PORT/secretsmanager/get?secretId=$SECRET_ID"

# The fetches above must have succeeded: check the first one properly.
body="$(curl -sS --max-time 15 -w '\n%{http_code}' -H "X-Aws-Parameters-Secrets-Token: $TOKEN" \
  "http://127.0.0.1:$PORT/secretsmanager/get?secretId=$SECRET_ID")"
code="${body##*$'\n'}"
[ "$code" = 200 ] || die "expected HTTP 200 from the agent, got $code: ${body%$'\n'*}"
grep -q 's3cr3t-demo-only' <<<"$body" || die "the agent's answer does not hold the secret value"
body="$(curl -sS --max-time 15 -H "X-Aws-Parameters-Secrets-Token: $TOKEN" \
  "http://127.0.0.1:$PORT/systemsmanager/parameters/get?name=/demo/db-host")"
grep -q 'db.demo.internal' <<<"$body" || die "the agent's answer does not hold the parameter: $body"

step "demo finished: stopping the agent and moto"
