#!/bin/bash
# install.sh: install secrets-manager-agent as a systemd service, in the layout of
# AWS's Secrets Manager Agent (user awssmauser, group awssmatokenreader, token file
# /var/run/awssmatoken, everything else under /opt/aws/secretsmanageragent).
#
#   sudo ./install.sh [--binary PATH]      install (or upgrade) and start the agent
#   sudo ./install.sh --uninstall          remove everything install.sh made
#   ./install.sh --root DIR [...]          the same, into the staging tree DIR only
#
# Running it again changes nothing. Run ./install.sh --help for details.
set -euo pipefail
umask 022

readonly PROG=install.sh
readonly BIN_NAME=secrets-manager-agent
readonly AGENT_USER=awssmauser
readonly TOKEN_GROUP=awssmatokenreader
readonly AGENT_DIR=/opt/aws/secretsmanageragent
readonly BIN_PATH=$AGENT_DIR/bin/$BIN_NAME
readonly CONFIG_PATH=$AGENT_DIR/etc/config.toml
readonly LOGS_DIR=$AGENT_DIR/logs
readonly MANIFEST=$AGENT_DIR/.install-manifest
readonly UNIT_DIR=/etc/systemd/system
readonly WANTS_DIR=$UNIT_DIR/multi-user.target.wants
readonly TOKEN_UNIT=secrets-manager-agent-token.service
readonly AGENT_UNIT=secrets-manager-agent.service
readonly TOKEN_FILE=/var/run/awssmatoken
# Files the agent itself writes into LOGS_DIR (removed by --uninstall).
readonly LOG_GLOB='secrets_manager_agent.log*'

usage() {
    cat <<EOF
Usage: $PROG [--binary PATH] [--root DIR]
       $PROG --uninstall [--root DIR]

Installs secrets-manager-agent as a systemd service, laid out like AWS's Secrets
Manager Agent:

  $BIN_PATH      the agent
  $CONFIG_PATH            its config (kept if it already exists)
  $LOGS_DIR/                   its log files (owned by $AGENT_USER)
  $UNIT_DIR/$TOKEN_UNIT    writes a fresh token at boot
  $UNIT_DIR/$AGENT_UNIT          runs the agent as $AGENT_USER
  $TOKEN_FILE                          the token: mode 0640, group $TOKEN_GROUP

It creates the system user $AGENT_USER and the group $TOKEN_GROUP when they are
missing. Add the users of applications that call the agent to $TOKEN_GROUP so they
can read the token:  usermod -aG $TOKEN_GROUP APPUSER

Options:
  --binary PATH  the agent binary to install. Default: the first of
                 ./$BIN_NAME next to install.sh,
                 target/$(uname -m)-unknown-linux-musl/release/$BIN_NAME,
                 target/release/$BIN_NAME (relative to install.sh)
  --root DIR     install into the staging tree DIR (an existing directory) instead
                 of this system: user and group go into DIR/etc/passwd and
                 DIR/etc/group, the units are enabled by symlinks in
                 DIR$WANTS_DIR, and nothing is started.
                 Needs no root, but files are owned by root only when run as root.
  --uninstall    stop and disable the units and remove everything install.sh made:
                 units, binary, config, logs, token file, the directories, user and
                 group it created (a config, user or group that existed before the
                 install is kept).
  -h, --help     print this help

Without --root it must run as root, and starts the agent (or restarts it when an
upgrade changed the binary, the config or a unit). Running it twice changes nothing.
EOF
}

say() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}
usage_error() {
    printf '%s: %s\nTry: %s --help\n' "$PROG" "$*" "$PROG" >&2
    exit 2
}

# ------------------------------------------------------------------ arguments

ROOT=""
STAGING=0
BINARY=""
UNINSTALL=0
while (($#)); do
    case $1 in
        --binary)
            (($# >= 2)) || usage_error "--binary needs a path"
            BINARY=$2
            shift 2
            ;;
        --binary=*)
            BINARY=${1#--binary=}
            shift
            ;;
        --root)
            (($# >= 2)) || usage_error "--root needs a directory"
            ROOT=$2
            STAGING=1
            shift 2
            ;;
        --root=*)
            ROOT=${1#--root=}
            STAGING=1
            shift
            ;;
        --uninstall)
            UNINSTALL=1
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) usage_error "unknown argument: $1" ;;
    esac
done

if ((STAGING)); then
    [[ -n $ROOT ]] || usage_error "--root needs a directory"
    [[ -d $ROOT ]] || die "--root $ROOT: not an existing directory"
    ROOT=$(cd -- "$ROOT" && pwd -P)
    [[ $ROOT != / ]] || die "--root /: run without --root to install on this system"
fi
if ((UNINSTALL)) && [[ -n $BINARY ]]; then
    usage_error "--binary makes no sense with --uninstall"
fi

IS_ROOT=0
[[ $(id -u) == 0 ]] && IS_ROOT=1
if ((!STAGING)); then
    ((IS_ROOT)) || die "must run as root (or use --root DIR to stage into a directory)"
    command -v systemctl >/dev/null || die "systemctl not found: install.sh is for systemd hosts"
fi

# ------------------------------------------------------------------ helpers

# t PATH: PATH (absolute, on the target system) as seen from here.
t() { printf '%s%s' "$ROOT" "$1"; }

SCRATCH=$(mktemp -d)
trap 'rm -rf -- "$SCRATCH"' EXIT

# The manifest lists what install.sh created, one "KIND PATH-OR-NAME" per line, in
# creation order: dir, file (the config, or a staged passwd/group file), user, group,
# usergroup. --uninstall removes exactly these (plus the units, binary, token file and
# log files, which are always ours).
MANIFEST_LINES=()
load_manifest() {
    MANIFEST_LINES=()
    local line
    if [[ -f $(t "$MANIFEST") ]]; then
        while IFS= read -r line; do
            [[ -n $line ]] && MANIFEST_LINES+=("$line")
        done <"$(t "$MANIFEST")"
    fi
    return 0
}
in_manifest() {
    local line
    # ${a[@]+...}: bash before 4.4 calls an empty array unbound under set -u
    for line in ${MANIFEST_LINES[@]+"${MANIFEST_LINES[@]}"}; do
        [[ $line == "$1" ]] && return 0
    done
    return 1
}
record() {
    in_manifest "$1 $2" || MANIFEST_LINES+=("$1 $2")
    # The manifest lives in AGENT_DIR; until that exists it is kept in memory only.
    if [[ -d $(t "$AGENT_DIR") ]]; then save_manifest; fi
}
save_manifest() {
    printf '%s\n' ${MANIFEST_LINES[@]+"${MANIFEST_LINES[@]}"} >"$SCRATCH/manifest"
    put_file "$SCRATCH/manifest" "$MANIFEST" 0644 >/dev/null
}

# own_root PATH: root:root, when we may chown.
own_root() {
    if ((IS_ROOT)); then chown -h 0:0 "$1"; fi
}

# ensure_dir PATH MODE: create PATH and every missing parent (parents 0755, root),
# recording each directory created.
ensure_dir() {
    local path=$1 mode=$2 cur="" part parts
    IFS=/ read -ra parts <<<"${path#/}"
    for part in "${parts[@]}"; do
        cur="$cur/$part"
        if [[ ! -d $(t "$cur") ]]; then
            [[ -e $(t "$cur") || -L $(t "$cur") ]] && die "$(t "$cur") exists and is not a directory"
            if [[ $cur == "$path" ]]; then mkdir -m "$mode" -- "$(t "$cur")"; else mkdir -m 0755 -- "$(t "$cur")"; fi
            own_root "$(t "$cur")"
            record dir "$cur"
        fi
    done
}

# put_file SRC DEST MODE: install SRC as DEST (target path) unless identical, owned by
# root with MODE, replaced atomically. Prints "changed" when it wrote DEST.
put_file() {
    local src=$1 dest mode=$3
    dest=$(t "$2")
    if [[ -f $dest && ! -L $dest ]] && cmp -s -- "$src" "$dest"; then
        chmod "$mode" -- "$dest"
        own_root "$dest"
        return 0
    fi
    local tmp="$dest.new.$$"
    cp -- "$src" "$tmp"
    chmod "$mode" -- "$tmp"
    own_root "$tmp"
    mv -f -- "$tmp" "$dest"
    echo changed
}

# ------------------------------------------------------------------ users and groups
#
# On this system: getent, groupadd, useradd, userdel, groupdel. In a staging tree:
# lines in DIR/etc/passwd and DIR/etc/group (and DIR/etc/shadow, DIR/etc/gshadow when
# those files exist), ids allocated like useradd --system does: the highest free id
# below 1000.

staged_field() { # FILE NAME FIELD
    [[ -f $1 ]] || return 0
    awk -F: -v n="$2" -v f="$3" '$1 == n { print $f; exit }' "$1"
}
staged_has() { [[ -f $1 ]] && awk -F: -v n="$2" '$1 == n { found = 1 } END { exit !found }' "$1"; }
staged_id_used() { # ID: used as a uid or gid in the staging tree
    local f files=()
    for f in "$(t /etc/passwd)" "$(t /etc/group)"; do
        if [[ -f $f ]]; then files+=("$f"); fi
    done
    ((${#files[@]})) || return 1
    awk -F: -v i="$1" '$3 == i { found = 1 } END { exit !found }' "${files[@]}"
}
staged_free_id() { # the highest id in 999..100 unused as uid and gid in the staging tree
    local id
    for ((id = 999; id >= 100; id--)); do
        if ! staged_id_used "$id"; then
            echo "$id"
            return 0
        fi
    done
    die "no free system id below 1000 in $(t /etc/passwd) and $(t /etc/group)"
}
staged_append() { # FILE LINE: append LINE, creating FILE (recorded) if needed
    local file=$1
    if [[ ! -e $(t "$file") ]]; then
        : >"$(t "$file")"
        chmod 0644 "$(t "$file")"
        own_root "$(t "$file")"
        record file "$file"
    fi
    # keep a missing final newline from gluing two lines together
    if [[ -s $(t "$file") && $(tail -c 1 "$(t "$file")" | od -An -c | tr -d ' ') != '\n' ]]; then
        echo >>"$(t "$file")"
    fi
    printf '%s\n' "$2" >>"$(t "$file")"
}
staged_remove() { # FILE NAME: drop NAME's line, keeping the file's mode and owner
    local file
    file=$(t "$1")
    staged_has "$file" "$2" || return 0
    awk -F: -v n="$2" '$1 != n' "$file" >"$SCRATCH/staged"
    cat "$SCRATCH/staged" >"$file"
}

group_exists() {
    if ((STAGING)); then staged_has "$(t /etc/group)" "$1"; else getent group "$1" >/dev/null; fi
}
user_exists() {
    if ((STAGING)); then staged_has "$(t /etc/passwd)" "$1"; else getent passwd "$1" >/dev/null; fi
}

nologin_shell() {
    local sh
    for sh in /usr/sbin/nologin /sbin/nologin; do
        if [[ -x $(t "$sh") ]]; then
            echo "$sh"
            return 0
        fi
    done
    if ((STAGING)); then echo /usr/sbin/nologin; else echo /bin/false; fi
}

ensure_group() { # NAME KIND
    group_exists "$1" && return 0
    if ((STAGING)); then
        local gid
        gid=$(staged_free_id)
        staged_append /etc/group "$1:x:$gid:"
        if [[ -f $(t /etc/gshadow) ]]; then staged_append /etc/gshadow "$1:!::"; fi
    else
        groupadd --system "$1"
    fi
    say "created group $1"
    record "$2" "$1"
}

ensure_user() {
    user_exists "$AGENT_USER" && return 0
    ensure_group "$AGENT_USER" usergroup
    local shell
    shell=$(nologin_shell)
    if ((STAGING)); then
        local gid uid
        gid=$(staged_field "$(t /etc/group)" "$AGENT_USER" 3)
        uid=$gid
        # uid = gid when that uid is free, as useradd does
        if [[ -f $(t /etc/passwd) ]] &&
            awk -F: -v i="$uid" '$3 == i { found = 1 } END { exit !found }' "$(t /etc/passwd)"; then
            uid=$(staged_free_id)
        fi
        staged_append /etc/passwd "$AGENT_USER:x:$uid:$gid:secrets-manager-agent:$AGENT_DIR:$shell"
        if [[ -f $(t /etc/shadow) ]]; then staged_append /etc/shadow "$AGENT_USER:!*:::::::"; fi
    else
        useradd --system --gid "$AGENT_USER" --home-dir "$AGENT_DIR" --no-create-home \
            --shell "$shell" --comment secrets-manager-agent "$AGENT_USER"
    fi
    say "created user $AGENT_USER"
    record user "$AGENT_USER"
}

# chown_agent PATH: owned by AGENT_USER and its primary group.
chown_agent() {
    if ((STAGING)); then
        ((IS_ROOT)) || return 0
        local uid gid
        uid=$(staged_field "$(t /etc/passwd)" "$AGENT_USER" 3)
        gid=$(staged_field "$(t /etc/passwd)" "$AGENT_USER" 4)
        chown "$uid:$gid" "$(t "$1")"
    else
        chown "$AGENT_USER:" "$1"
    fi
}

# ------------------------------------------------------------------ file contents

# Sandboxing both units share (systemd.exec(5)).
sandbox_kernel() {
    cat <<'EOF'
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
EOF
}

sandbox_process() {
    cat <<'EOF'
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
EOF
}

write_token_unit() {
    cat <<EOF
# Installed by secrets-manager-agent's install.sh; removed by install.sh --uninstall.
# Writes a fresh random token (32 bytes from getrandom, 64 hex digits, made by the
# agent binary) to $TOKEN_FILE at boot: mode 0640, group $TOKEN_GROUP, replaced
# atomically. /var/run is a tmpfs, so every boot gets a new token. Restarting this
# unit makes a new token and restarts $AGENT_UNIT.
[Unit]
Description=Fresh token for secrets-manager-agent in $TOKEN_FILE
Before=$AGENT_UNIT

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'rm -f $TOKEN_FILE.tmp && umask 0137 && $BIN_PATH token > $TOKEN_FILE.tmp && chgrp $TOKEN_GROUP $TOKEN_FILE.tmp && mv -f $TOKEN_FILE.tmp $TOKEN_FILE'
UMask=0077
NoNewPrivileges=yes
CapabilityBoundingSet=CAP_CHOWN
ProtectSystem=strict
ReadWritePaths=/run
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateNetwork=yes
PrivateMounts=yes
$(sandbox_kernel)
RestrictAddressFamilies=AF_UNIX
$(sandbox_process)
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
EOF
}

write_agent_unit() {
    cat <<EOF
# Installed by secrets-manager-agent's install.sh; removed by install.sh --uninstall.
# Serves AWS Secrets Manager secrets, cached, on http://127.0.0.1:2773 (see http_port
# in $CONFIG_PATH). Clients send the token from $TOKEN_FILE
# (readable by group $TOKEN_GROUP) in the X-Aws-Parameters-Secrets-Token header.
# Logs: $LOGS_DIR/secrets_manager_agent.log (log_to_file = true) or the journal.
# Local changes belong in a drop-in (systemctl edit $AGENT_UNIT): install.sh
# rewrites this file.
[Unit]
Description=secrets-manager-agent: cached AWS Secrets Manager secrets on localhost
Requires=$TOKEN_UNIT
After=$TOKEN_UNIT network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=$BIN_PATH --config $CONFIG_PATH
WorkingDirectory=$AGENT_DIR
User=$AGENT_USER
Group=$AGENT_USER
SupplementaryGroups=$TOKEN_GROUP
Environment=AWS_TOKEN=file://$TOKEN_FILE
Restart=on-failure
RestartSec=5
UMask=0077
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ReadWritePaths=$LOGS_DIR
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateMounts=yes
$(sandbox_kernel)
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
$(sandbox_process)
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
EOF
}

write_config() {
    cat <<EOF
# secrets-manager-agent configuration, installed by install.sh (which keeps this file
# when it exists). Same keys as AWS's Secrets Manager Agent; every key is optional
# and an unknown key stops the start. Apply changes with:
#   sudo systemctl restart $AGENT_UNIT

# Log to logs/secrets_manager_agent.log under the working directory, which
# $AGENT_UNIT sets to $AGENT_DIR: $LOGS_DIR/ (rotated at 10 MB,
# 5 files kept). false: log to the journal (journalctl -u $AGENT_UNIT).
log_to_file = true
log_level = "INFO"            # DEBUG, INFO, WARN, ERROR, NONE
http_port = 2773              # 1024-65535; the listener is 127.0.0.1 only
ttl_seconds = 300             # 0-3600; 0 disables caching
cache_size = 1000             # 1-1000 secrets

# region = "us-east-1"        # default: AWS_REGION, AWS_DEFAULT_REGION, the profile, then the instance (IMDS)
# max_conn = 800              # 1-1000 requests in flight
# path_prefix = "/v1/"
# ignore_transient_errors = true
# validate_credentials = true
# ssrf_headers = ["X-Aws-Parameters-Secrets-Token", "X-Vault-Token"]
# ssrf_env_variables = ["AWS_TOKEN", "AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN"]
# credentials_file_path = "$AGENT_DIR/etc/credentials"   # instead of the credential chain
EOF
}

# ------------------------------------------------------------------ install

find_binary() {
    local here cand
    here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
    for cand in "$here/$BIN_NAME" \
        "$here/target/$(uname -m)-unknown-linux-musl/release/$BIN_NAME" \
        "$here/target/release/$BIN_NAME"; do
        if [[ -f $cand && -x $cand ]]; then
            echo "$cand"
            return 0
        fi
    done
    die "no agent binary found next to install.sh or under target/: build one (make static) or pass --binary PATH"
}

check_binary() {
    [[ -f $BINARY ]] || die "--binary $BINARY: no such file"
    [[ -x $BINARY ]] || die "--binary $BINARY: not executable"
    local tok
    tok=$("$BINARY" token 2>/dev/null) || tok=""
    [[ $tok =~ ^[0-9a-f]{64}$ ]] ||
        die "$BINARY is not secrets-manager-agent: '$BINARY token' did not print a 64-hex-digit token"
}

# AWS's agent installs the same user, group and token file, and listens on the same
# port: the two cannot run side by side.
check_no_aws_agent() {
    local d u
    for d in /etc/systemd/system /usr/lib/systemd/system /lib/systemd/system; do
        for u in awssmastartup.service awssmaseedtoken.service; do
            if [[ -e $(t "$d/$u") ]]; then
                die "AWS's Secrets Manager Agent is installed ($(t "$d/$u")); uninstall it first (its 'uninstall' script, or: systemctl disable --now awssmastartup awssmaseedtoken and remove their unit files)"
            fi
        done
    done
}

systemd_running() { [[ -d /run/systemd/system ]]; }

agent_substate() { # (systemctl show --value needs systemd 230)
    local s
    s=$(systemctl show -p SubState "$AGENT_UNIT")
    echo "${s#SubState=}"
}

# agent_stays_up: the agent unit is still running about 3 s after its start (with
# Type=simple, systemctl start returns before the agent has read its config).
agent_stays_up() {
    local i
    for ((i = 0; i < 10; i++)); do
        sleep 0.3
        case $(agent_substate) in
            auto-restart | failed | dead) return 1 ;;
        esac
    done
    systemctl is-active --quiet "$AGENT_UNIT"
}

warn_old_systemd() {
    local v
    v=$(systemctl --version 2>/dev/null | awk 'NR == 1 { print $2 }')
    if [[ $v =~ ^[0-9]+$ ]] && ((v < 247)); then
        warn "systemd $v is older than 247: it ignores some of the units' hardening directives (see the journal)"
    fi
}

do_install() {
    check_no_aws_agent
    if [[ -z $BINARY ]]; then BINARY=$(find_binary); fi
    check_binary
    load_manifest

    ensure_dir "$AGENT_DIR/bin" 0755
    ensure_dir "$AGENT_DIR/etc" 0755
    ensure_dir "$LOGS_DIR" 0750
    ensure_dir "$UNIT_DIR" 0755
    if ((STAGING)); then ensure_dir "$WANTS_DIR" 0755; fi
    save_manifest

    ensure_group "$TOKEN_GROUP" group
    ensure_user
    chown_agent "$LOGS_DIR"
    chmod 0750 "$(t "$LOGS_DIR")"

    local agent_changed="" token_changed=""
    agent_changed+=$(put_file "$BINARY" "$BIN_PATH" 0755)
    write_config >"$SCRATCH/config.toml"
    if [[ ! -e $(t "$CONFIG_PATH") ]]; then
        agent_changed+=$(put_file "$SCRATCH/config.toml" "$CONFIG_PATH" 0644)
        record file "$CONFIG_PATH"
    elif ! cmp -s -- "$SCRATCH/config.toml" "$(t "$CONFIG_PATH")"; then
        say "keeping the existing $CONFIG_PATH"
    fi
    write_token_unit >"$SCRATCH/$TOKEN_UNIT"
    token_changed=$(put_file "$SCRATCH/$TOKEN_UNIT" "$UNIT_DIR/$TOKEN_UNIT" 0644)
    write_agent_unit >"$SCRATCH/$AGENT_UNIT"
    agent_changed+=$(put_file "$SCRATCH/$AGENT_UNIT" "$UNIT_DIR/$AGENT_UNIT" 0644)

    if ((STAGING)); then
        local u link
        for u in "$TOKEN_UNIT" "$AGENT_UNIT"; do
            link=$(t "$WANTS_DIR/$u")
            if [[ $(readlink -- "$link" 2>/dev/null) != "$UNIT_DIR/$u" ]]; then
                rm -f -- "$link"
                ln -s -- "$UNIT_DIR/$u" "$link"
            fi
        done
        say "staged into $ROOT (enabled, not started)"
        return 0
    fi

    warn_old_systemd
    if [[ -n $agent_changed$token_changed ]]; then systemctl daemon-reload; fi
    systemctl enable --quiet "$TOKEN_UNIT" "$AGENT_UNIT"
    if ! systemd_running; then
        warn "systemd is not running here: the units are enabled and start at the next boot"
        return 0
    fi
    local was_running=0
    if [[ $(agent_substate) == running ]]; then was_running=1; fi
    if [[ -n $token_changed ]]; then
        systemctl restart "$TOKEN_UNIT" # a new token; restarts a running agent (Requires=)
    fi
    if [[ -n $agent_changed ]]; then
        systemctl try-restart "$AGENT_UNIT"
    fi
    systemctl start "$AGENT_UNIT" # and the token unit, if not active yet
    if { [[ -n $agent_changed$token_changed ]] || ((!was_running)); } && ! agent_stays_up; then
        die "installed, but $AGENT_UNIT does not stay up: see $LOGS_DIR/secrets_manager_agent.log and journalctl -u $AGENT_UNIT (the agent needs a region and AWS credentials; on EC2, attach an instance profile)"
    fi
    say "installed and running: curl -s http://localhost:2773/ping; logs in $LOGS_DIR/"
    say "let an application user read the token: usermod -aG $TOKEN_GROUP APPUSER"
}

# ------------------------------------------------------------------ uninstall

remove() { # target paths; no error when absent
    local p
    for p in "$@"; do rm -f -- "$(t "$p")"; done
}

do_uninstall() {
    load_manifest
    if [[ ! -f $(t "$MANIFEST") ]]; then
        if [[ ! -e $(t "$UNIT_DIR/$AGENT_UNIT") && ! -e $(t "$UNIT_DIR/$TOKEN_UNIT") && ! -e $(t "$BIN_PATH") ]]; then
            say "nothing to uninstall${ROOT:+ in $ROOT}"
            return 0
        fi
        warn "no $MANIFEST: removing the known files only, no user, group or directory"
    fi

    if ((STAGING)); then
        remove "$WANTS_DIR/$AGENT_UNIT" "$WANTS_DIR/$TOKEN_UNIT"
    else
        local u units=()
        for u in "$AGENT_UNIT" "$TOKEN_UNIT"; do
            [[ -e $UNIT_DIR/$u ]] && units+=("$u")
        done
        if ((${#units[@]})); then
            if systemd_running; then
                systemctl disable --now --quiet "${units[@]}" || warn "could not stop ${units[*]}"
            else
                systemctl disable --quiet "${units[@]}" || true
            fi
        fi
    fi
    remove "$UNIT_DIR/$AGENT_UNIT" "$UNIT_DIR/$TOKEN_UNIT"
    if ((!STAGING)) && systemd_running; then
        systemctl daemon-reload
        systemctl reset-failed "$AGENT_UNIT" "$TOKEN_UNIT" 2>/dev/null || true
    fi
    remove "$TOKEN_FILE" "$TOKEN_FILE.tmp"
    remove "$BIN_PATH" "$MANIFEST"
    if in_manifest "file $CONFIG_PATH"; then remove "$CONFIG_PATH"; fi
    if in_manifest "dir $LOGS_DIR" && [[ -d $(t "$LOGS_DIR") ]]; then
        find "$(t "$LOGS_DIR")" -mindepth 1 -maxdepth 1 -name "$LOG_GLOB" -delete
    fi

    if in_manifest "user $AGENT_USER" && user_exists "$AGENT_USER"; then
        if ((STAGING)); then
            staged_remove /etc/passwd "$AGENT_USER"
            staged_remove /etc/shadow "$AGENT_USER"
        else
            userdel "$AGENT_USER"
        fi
        say "removed user $AGENT_USER"
    fi
    local kind name
    for kind in usergroup group; do
        name=$AGENT_USER
        [[ $kind == group ]] && name=$TOKEN_GROUP
        if in_manifest "$kind $name" && group_exists "$name"; then
            if ((STAGING)); then
                staged_remove /etc/group "$name"
                staged_remove /etc/gshadow "$name"
            else
                groupdel "$name"
            fi
            say "removed group $name"
        fi
    done

    # files, then directories, newest first; a directory that is not empty is kept
    local i line path
    for ((i = ${#MANIFEST_LINES[@]} - 1; i >= 0; i--)); do
        line=${MANIFEST_LINES[i]}
        path=${line#* }
        case $line in
            "file /etc/"*)
                if [[ -f $(t "$path") && ! -s $(t "$path") ]]; then rm -f -- "$(t "$path")"; fi
                ;;
        esac
    done
    for ((i = ${#MANIFEST_LINES[@]} - 1; i >= 0; i--)); do
        line=${MANIFEST_LINES[i]}
        path=${line#* }
        case $line in
            "dir "*)
                if [[ -d $(t "$path") ]]; then
                    rmdir -- "$(t "$path")" 2>/dev/null || warn "kept $(t "$path"): not empty"
                fi
                ;;
        esac
    done
    say "uninstalled${ROOT:+ from $ROOT}"
}

if ((UNINSTALL)); then do_uninstall; else do_install; fi
