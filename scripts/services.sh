#!/usr/bin/env bash
# Local backing services for iothub: PostgreSQL 15, PostgreSQL 15 with TimescaleDB (built from
# ../shared/vendor), Redis, Mosquitto and a single-node Kafka, all bound to 127.0.0.1 on unusual ports (so they never clash with system-wide instances),
# each run as our own daemon with its state under $ROOT/var/services/<name> (git-ignored).
#
#   scripts/services.sh up       install what is missing, start what is not running, wait until ready
#   scripts/services.sh down     stop all of them (gracefully), idempotent
#   scripts/services.sh status   one line per service
#   scripts/services.sh env      export lines only:  eval "$(scripts/services.sh env)"
#
# No systemd here (and none in CI), so nothing goes through systemctl/service: we start the
# daemons ourselves. `up` also installs chromium + chromium-driver for the browser tests.
#
# Ports (override with environment variables):
#   IOTHUB_PG_PORT=55432  IOTHUB_TSDB_PORT=55433  IOTHUB_REDIS_PORT=56379  IOTHUB_MQTT_PORT=51883  IOTHUB_MQTT_SECURE_PORT=51884
#   IOTHUB_KAFKA_PORT=59092  IOTHUB_KAFKA_CONTROLLER_PORT=59093
# Start timeouts (seconds): IOTHUB_SERVICES_START_TIMEOUT=30  IOTHUB_KAFKA_START_TIMEOUT=90
#
# A service that already answers on its port with the expected behaviour but was started from
# another checkout (e.g. CI's fresh clone on a machine where /work/main's services run) is used
# as it is; `down` only stops what this checkout started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICES="$ROOT/var/services"
HOST=127.0.0.1

PG_PORT="${IOTHUB_PG_PORT:-55432}"
TSDB_PORT="${IOTHUB_TSDB_PORT:-55433}"
REDIS_PORT="${IOTHUB_REDIS_PORT:-56379}"
MQTT_PORT="${IOTHUB_MQTT_PORT:-51883}"
MQTT_SECURE_PORT="${IOTHUB_MQTT_SECURE_PORT:-51884}"
KAFKA_PORT="${IOTHUB_KAFKA_PORT:-59092}"
KAFKA_CONTROLLER_PORT="${IOTHUB_KAFKA_CONTROLLER_PORT:-59093}"

# How long to wait for each service to answer after starting it (seconds).
START_TIMEOUT="${IOTHUB_SERVICES_START_TIMEOUT:-30}"
KAFKA_START_TIMEOUT="${IOTHUB_KAFKA_START_TIMEOUT:-90}"

PG_BIN=/usr/lib/postgresql/15/bin
# Downloaded code, kept apart from service state: wiping var/services keeps the jars.
KAFKA_LIBS="$ROOT/var/kafka/libs"
KAFKA_POM="$ROOT/scripts/kafka/pom.xml"
KAFKA_LOG4J="$ROOT/scripts/kafka/log4j2.xml"

MISSING_PKGS=()   # filled by the install_* functions, installed by one apt-get run

# ---------------------------------------------------------------------------------------------
# helpers

say() { printf '%s\n' "$*"; }
warn() { printf '%s\n' "$*" >&2; }
die() { warn "error: $*"; exit 1; }
is_root() { [[ $EUID -eq 0 ]]; }

# Print the last lines of a log to stderr (used when a service does not come up).
show_log() {
  local file=$1
  if [[ -f $file ]]; then
    warn "---- last lines of $file ----"
    tail -n 40 "$file" >&2 || true
    warn "----"
  else
    warn "(no log at $file)"
  fi
}

# True if something accepts TCP connections on 127.0.0.1:$1 (bash's /dev/tcp, no extra tools).
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# What holds a port, for error messages.
port_owner() {
  ss -ltnpH "sport = :$1" 2>/dev/null || true
}

# pid_alive PIDFILE PATTERN: the pid in PIDFILE is running and its command line contains
# PATTERN (guards against a stale pid file whose pid was reused by something else).
pid_alive() {
  local pidfile=$1 pattern=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(head -n 1 "$pidfile" | tr -dc '0-9')
  [[ -n $pid ]] && proc_running "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"
}

pid_of() { head -n 1 "$1" 2>/dev/null | tr -dc '0-9'; }

# A process that exists and is not a zombie (a daemon's exit is reaped by init, maybe late).
proc_running() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}
proc_gone() { ! proc_running "$1"; }

# wait_for SECONDS CMD...: run CMD until it succeeds or the time is up.
wait_for() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

# stop_pid NAME PIDFILE PATTERN TIMEOUT [CMD...]: ask the process to stop (CMD, or SIGTERM),
# wait for it to exit, SIGKILL as a last resort.
stop_pid() {
  local name=$1 pidfile=$2 pattern=$3 limit=$4 pid
  shift 4
  if ! pid_alive "$pidfile" "$pattern"; then
    rm -f "$pidfile"
    say "$name: not running"
    return 0
  fi
  pid=$(pid_of "$pidfile")
  say "$name: stopping (pid $pid)…"
  if (($#)); then
    "$@" >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  else
    kill -TERM "$pid" 2>/dev/null || true
  fi
  if ! wait_for "$limit" proc_gone "$pid"; then
    warn "$name: did not exit within ${limit}s, killing"
    kill -KILL "$pid" 2>/dev/null || true
    wait_for 10 proc_gone "$pid" || true
  fi
  rm -f "$pidfile"
  say "$name: stopped"
}

# A service answering on our port that this checkout did not start (typically: CI's fresh
# clone on a machine where another checkout's services still run) is used as it is, not
# fought over: same ports, same credentials, same behaviour.
using_external() {
  say "$1: already answering on $HOST:$2 (not started from this checkout), using it"
}

# Refuse to start a service whose port is already taken by a process that is not ours.
check_port_free() {
  local name=$1 port=$2
  if port_open "$port"; then
    warn "$name: port $HOST:$port is already in use by another process:"
    port_owner "$port" >&2
    die "$name: free the port or choose another one (IOTHUB_*_PORT)"
  fi
}

# Add Debian packages that are not installed yet to MISSING_PKGS.
need_pkg() {
  local pkg
  for pkg in "$@"; do
    if [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null) != ii* ]]; then
      MISSING_PKGS+=("$pkg")
    fi
  done
}

# One `apt-get update` + one `apt-get install` for everything missing, and only if needed.
apt_install_missing() {
  ((${#MISSING_PKGS[@]})) || return 0
  is_root || die "missing packages (${MISSING_PKGS[*]}); run as root or install them first"
  local log="$SERVICES/apt.log" made_policy=
  say "install: ${MISSING_PKGS[*]} (apt log: $log)"
  # Package maintainer scripts would start system-wide redis/mosquitto/postgres services on
  # the default ports; policy-rc.d exit 101 tells invoke-rc.d not to (Docker images ship one).
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  {
    apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${MISSING_PKGS[@]}"
  } >"$log" 2>&1 || rc=$?
  if [[ -n $made_policy ]]; then rm -f /usr/sbin/policy-rc.d; fi
  if ((rc)); then
    show_log "$log"
    die "apt-get failed (exit $rc)"
  fi
  say "install: done"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL 15 clusters, each with role/database iothub:
#   postgres     127.0.0.1:$PG_PORT    the system's PostgreSQL 15 (native partitions path)
#   timescaledb  127.0.0.1:$TSDB_PORT  PostgreSQL 15.18 from Debian's .debs with TimescaleDB
#                                      built from ../shared/vendor, its job scheduler running
# The cluster functions below act on the cluster chosen by use_cluster.

# Run a PostgreSQL server command as the `postgres` OS user: initdb and the server refuse to
# run as root. From / so the tools do not complain about an unreadable working directory.
as_pg() {
  if is_root; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# Where the clusters keep their data. Normally $SERVICES/<cluster>; but the postgres user must
# be able to traverse every directory down to it, and the Unix socket path (inside the data dir)
# must stay under the kernel's ~107 byte limit. If either fails for the repo path, use
# /var/tmp/iothub-<hash of ROOT>/<cluster> instead. An existing cluster wins either way.
PG_PARENT=   # set once per run by pg_parent
pg_parent() {
  [[ -n $PG_PARENT ]] && { echo "$PG_PARENT"; return; }
  local fallback
  fallback="/var/tmp/iothub-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
  if [[ -f $SERVICES/postgres/data/PG_VERSION ]]; then
    PG_PARENT=$SERVICES
  elif [[ -f $fallback/postgres/data/PG_VERSION ]]; then
    PG_PARENT=$fallback
  elif pg_dir_usable "$SERVICES/postgres"; then
    PG_PARENT=$SERVICES
  else
    PG_PARENT=$fallback
  fi
  echo "$PG_PARENT"
}

pg_dir_usable() {
  local sock="$1/data/.s.PGSQL.$PG_PORT"
  ((${#sock} <= 100)) || return 1
  if is_root; then
    [[ -d $SERVICES ]] || return 1
    (cd / && runuser -u postgres -- test -x "$SERVICES") 2>/dev/null || return 1
  fi
}

# use_cluster postgres|timescaledb: sets CL_NAME, CL_BIN (server binaries), CL_PORT, CL_HOME and
# CL_CONF (settings beyond the common ones).
use_cluster() {
  CL_NAME=$1
  CL_HOME="$(pg_parent)/$1"
  case $1 in
    postgres)
      CL_BIN=$PG_BIN
      CL_PORT=$PG_PORT
      CL_CONF=""
      ;;
    timescaledb)
      CL_BIN="$(tsdb_root)/usr/lib/postgresql/15/bin"
      CL_PORT=$TSDB_PORT
      # One scheduler per database with the extension plus one worker per running job: the
      # tests create a database per test (8 workers gave "out of background workers").
      CL_CONF="shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
max_worker_processes = 32
timescaledb.max_background_workers = 16"
      ;;
  esac
}

install_postgres() {
  need_pkg postgresql-15 postgresql-client-15
}

cluster_running() {
  [[ -f $CL_HOME/data/PG_VERSION ]] && as_pg "$CL_BIN/pg_ctl" -D "$CL_HOME/data" status >/dev/null 2>&1
}

cluster_ready() {
  "$PG_BIN/pg_isready" -q -h "$HOST" -p "$CL_PORT" -t 2
}

start_cluster() {
  local data="$CL_HOME/data" log="$CL_HOME/postgres.log"

  if cluster_running; then
    wait_for "$START_TIMEOUT" cluster_ready || { show_log "$log"; die "$CL_NAME: running but not answering on $HOST:$CL_PORT"; }
    say "$CL_NAME: already running on $HOST:$CL_PORT"
    cluster_bootstrap
    return 0
  fi
  if cluster_ready && cluster_login_ok; then
    using_external "$CL_NAME" "$CL_PORT"
    return 0
  fi
  check_port_free "$CL_NAME" "$CL_PORT"

  mkdir -p "$CL_HOME"
  if [[ $(dirname "$CL_HOME") != "$SERVICES" ]]; then
    say "$CL_NAME: the repo path is not usable by the postgres user (permissions or socket path length); data dir is $data"
    chmod 755 "$(dirname "$CL_HOME")"
  fi
  if is_root; then chown postgres:postgres "$CL_HOME"; fi
  chmod 700 "$CL_HOME"

  if [[ ! -f $data/PG_VERSION ]]; then
    say "$CL_NAME: initdb in $data…"
    # C.UTF-8 is always present on Debian 12, so the cluster's encoding does not depend on the
    # caller's LANG. Local (socket) connections are trusted: the socket lives in the 0700 data
    # dir, so only postgres/root reach it. TCP connections need the password.
    as_pg "$CL_BIN/initdb" -D "$data" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 >"$CL_HOME/initdb.log" 2>&1 ||
      { show_log "$CL_HOME/initdb.log"; die "$CL_NAME: initdb failed"; }
  fi

  # Our settings live in their own file, rewritten on every start (so port changes apply).
  # Durability stays at the defaults (fsync, synchronous_commit on): fault tests rely on it.
  grep -q "^include_if_exists = 'iothub.conf'" "$data/postgresql.conf" ||
    as_pg sh -c "printf '\n%s\n' \"include_if_exists = 'iothub.conf'\" >> '$data/postgresql.conf'"
  as_pg tee "$data/iothub.conf" >/dev/null <<CONF
# written by scripts/services.sh — changes are overwritten on the next start
listen_addresses = '$HOST'
port = $CL_PORT
unix_socket_directories = '$data'
max_connections = 200
shared_buffers = 256MB
$CL_CONF
CONF

  say "$CL_NAME: starting…"
  # 9>&- here and for every daemon: our lock file's descriptor must not live on in the server.
  as_pg "$CL_BIN/pg_ctl" -D "$data" -l "$log" -w -t "$START_TIMEOUT" -s start 9>&- ||
    { show_log "$log"; die "$CL_NAME: failed to start"; }
  wait_for "$START_TIMEOUT" cluster_ready || { show_log "$log"; die "$CL_NAME: not answering on $HOST:$CL_PORT"; }
  cluster_bootstrap
  say "$CL_NAME: ready on $HOST:$CL_PORT"
}

# The app's credentials work over TCP (what DATABASE_URL uses).
cluster_login_ok() {
  PGPASSWORD=iothub PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -h "$HOST" -p "$CL_PORT" -U iothub \
    -d iothub -Atc 'SELECT 1' >/dev/null 2>&1
}

# Role and database for the app, idempotently. SUPERUSER because the test runner creates test
# databases and partitions.
cluster_bootstrap() {
  local psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$CL_HOME/data" -p "$CL_PORT" -U postgres -d postgres)
  "${psql[@]}" <<'SQL' >/dev/null
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'iothub') THEN
    CREATE ROLE iothub LOGIN SUPERUSER PASSWORD 'iothub';
  ELSE
    ALTER ROLE iothub LOGIN SUPERUSER PASSWORD 'iothub';
  END IF;
END
$$;
SQL
  if [[ -z $("${psql[@]}" -Atc "SELECT 1 FROM pg_database WHERE datname = 'iothub'") ]]; then
    "${psql[@]}" -c 'CREATE DATABASE iothub OWNER iothub'
  fi
}

stop_cluster() {
  if ! cluster_running; then
    say "$CL_NAME: not running"
    return 0
  fi
  say "$CL_NAME: stopping…"
  as_pg "$CL_BIN/pg_ctl" -D "$CL_HOME/data" -m fast -w -t 60 -s stop
  say "$CL_NAME: stopped"
}

status_cluster() {
  local label
  label=$(printf '%-10s' "$CL_NAME")
  if cluster_running && cluster_ready; then
    say "$label running  $HOST:$CL_PORT  (data $CL_HOME/data)"
  elif cluster_ready && cluster_login_ok; then
    say "$label running  $HOST:$CL_PORT  (not started from this checkout)"
  else
    say "$label stopped  $HOST:$CL_PORT"
  fi
}

# The per-service verbs that cmd_up/down/status/restart call.
start_postgres() { use_cluster postgres; start_cluster; }
stop_postgres() { use_cluster postgres; stop_cluster; }
ready_postgres() { use_cluster postgres; cluster_ready; }
status_postgres() { use_cluster postgres; status_cluster; }
start_timescaledb() { use_cluster timescaledb; start_cluster; }
stop_timescaledb() { use_cluster timescaledb; stop_cluster; }
ready_timescaledb() { use_cluster timescaledb; cluster_ready; }
status_timescaledb() { use_cluster timescaledb; status_cluster; }

# ---------------------------------------------------------------------------------------------
# Redis 7 — 127.0.0.1:$REDIS_PORT

REDIS_DIR="$SERVICES/redis"
REDIS_PID="$REDIS_DIR/redis.pid"

install_redis() {
  need_pkg redis-server redis-tools
}

ready_redis() {
  [[ $(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

start_redis() {
  if pid_alive "$REDIS_PID" redis-server; then
    wait_for "$START_TIMEOUT" ready_redis || { show_log "$REDIS_DIR/redis.log"; die "redis: running but not answering"; }
    say "redis: already running on $HOST:$REDIS_PORT"
    return 0
  fi
  if ready_redis; then
    using_external redis "$REDIS_PORT"
    return 0
  fi
  check_port_free redis "$REDIS_PORT"
  mkdir -p "$REDIS_DIR"
  rm -f "$REDIS_PID"
  # A cache and Celery broker for development and tests: no snapshots, no AOF. Bound to
  # loopback, so protected mode (which only refuses non-loopback clients) stays on.
  cat >"$REDIS_DIR/redis.conf" <<EOF
# written by scripts/services.sh — changes are overwritten on the next start
bind $HOST
port $REDIS_PORT
protected-mode yes
daemonize yes
supervised no
pidfile $REDIS_PID
logfile $REDIS_DIR/redis.log
dir $REDIS_DIR
save ""
appendonly no
EOF
  say "redis: starting…"
  # Errors before daemonizing (bad config) go to start.log, not to the log file.
  redis-server "$REDIS_DIR/redis.conf" >"$REDIS_DIR/start.log" 2>&1 9>&- ||
    { show_log "$REDIS_DIR/start.log"; show_log "$REDIS_DIR/redis.log"; die "redis: failed to start"; }
  wait_for "$START_TIMEOUT" ready_redis || { show_log "$REDIS_DIR/redis.log"; die "redis: not answering on $HOST:$REDIS_PORT"; }
  say "redis: ready on $HOST:$REDIS_PORT"
}

stop_redis() {
  # nosave: nothing here is worth a snapshot, and it makes the shutdown immediate.
  stop_pid redis "$REDIS_PID" redis-server 30 redis-cli -h "$HOST" -p "$REDIS_PORT" shutdown nosave
}

status_redis() {
  if pid_alive "$REDIS_PID" redis-server && ready_redis; then
    say "redis      running  $HOST:$REDIS_PORT  (pid $(pid_of "$REDIS_PID"))"
  elif ready_redis; then
    say "redis      running  $HOST:$REDIS_PORT  (not started from this checkout)"
  else
    say "redis      stopped  $HOST:$REDIS_PORT"
  fi
}

# ---------------------------------------------------------------------------------------------
# Mosquitto 2.0 — 127.0.0.1:$MQTT_PORT (anonymous) and 127.0.0.1:$MQTT_SECURE_PORT (TLS, dynamic security)
#
# Two listeners with per_listener_settings: $MQTT_PORT stays anonymous for the test suite and
# local tools; $MQTT_SECURE_PORT speaks TLS only, with a server certificate of a local CA made
# once ($MQTT_DIR/tls/ca.crt, exported by `env` as IOTHUB_MQTT_CA), and requires a login checked
# by the dynamic-security plugin (device accounts provisioned by the hub, see docs/security.md):
# passwords and readings never cross the network in clear text. The plugin's clients, roles
# and ACLs live in $MQTT_DIR/dynamic-security.json, created once with an admin account whose
# generated password is kept in $MQTT_DIR/admin.env (mode 600) and exported by `env` as
# MQTT_ADMIN_URL. An existing file is kept on every later run.

MQTT_DIR="$SERVICES/mosquitto"
MQTT_PID="$MQTT_DIR/mosquitto.pid"
MOSQUITTO_BIN=/usr/sbin/mosquitto
DYNSEC_FILE="$MQTT_DIR/dynamic-security.json"
MQTT_ADMIN_ENV="$MQTT_DIR/admin.env"
MQTT_ADMIN_USER_DEFAULT=iothub-admin
DYNSEC_CREATED=   # set by ensure_dynsec when it initialised a new file

MQTT_TLS="$MQTT_DIR/tls"

install_mosquitto() {
  need_pkg mosquitto mosquitto-clients openssl
}

# A local CA and a server certificate for 127.0.0.1/localhost, made once (kept on later runs, so
# devices configured with the CA keep working).
ensure_mqtt_tls() {
  [[ -s $MQTT_TLS/ca.crt && -s $MQTT_TLS/server.crt && -s $MQTT_TLS/server.key ]] && return 0
  mkdir -p "$MQTT_TLS"
  local log="$MQTT_TLS/openssl.log"
  say "mosquitto: making a local CA and server certificate in $MQTT_TLS"
  (
    set -e
    cd "$MQTT_TLS"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=iothub local MQTT CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout ca.key -out ca.crt
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
    printf '%s\n' "subjectAltName=IP:$HOST,DNS:localhost" "basicConstraints=CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
      -extfile server.ext -out server.crt
    chmod 644 ca.crt server.crt
  ) >"$log" 2>&1 || { show_log "$log"; die "mosquitto: could not make the TLS certificates"; }
}

# Where the Debian package put the plugin (/usr/lib/<multiarch>/ on Debian 12).
dynsec_plugin() {
  local path
  path=$(dpkg -L mosquitto 2>/dev/null | grep -m 1 '/mosquitto_dynamic_security\.so$' || true)
  if [[ -z $path ]]; then
    for path in /usr/lib/*/mosquitto_dynamic_security.so /usr/lib/mosquitto_dynamic_security.so; do
      [[ -f $path ]] && break
    done
  fi
  [[ -f $path ]] || die "mosquitto: dynamic-security plugin (mosquitto_dynamic_security.so) not found"
  echo "$path"
}

# admin.env of the Mosquitto that serves our secure port, when another checkout started it.
running_admin_env() {
  local pid conf
  for pid in $(pgrep -x mosquitto); do
    conf=$(tr '\0' '\n' <"/proc/$pid/cmdline" | sed -n '/^-c$/{n;p;}')
    if [[ -n $conf ]] && grep -q "^listener $MQTT_SECURE_PORT " "$conf" 2>/dev/null; then
      echo "$(dirname "$conf")/admin.env"
      return
    fi
  done
}

# admin.env holds KEY=value lines; read them without sourcing the file.
admin_env_get() {
  sed -n "s/^$1=//p" "$MQTT_ADMIN_ENV" 2>/dev/null | tail -n 1
}

# The admin account and the dynamic-security file, each created once. admin.env comes first:
# if `init` fails, the next run retries with the same password. A file whose admin password
# was lost (admin.env deleted) is set aside, not used: nobody could administer it.
ensure_dynsec() {
  mkdir -p "$MQTT_DIR"
  if [[ ! -s $MQTT_ADMIN_ENV ]]; then
    if [[ -f $DYNSEC_FILE ]]; then
      local aside
      aside="$DYNSEC_FILE.orphaned-$(date +%Y%m%d%H%M%S)"
      warn "mosquitto: $MQTT_ADMIN_ENV is missing, so the admin password of $DYNSEC_FILE is unknown;"
      warn "mosquitto: moving it to $aside and starting a new one (re-provision device credentials from the admin)"
      mv "$DYNSEC_FILE" "$aside"
    fi
    local password
    password=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
    [[ ${#password} -eq 48 ]] || die "mosquitto: could not generate an admin password"
    (
      umask 077
      printf '# written once by scripts/services.sh: the dynamic-security admin of the local Mosquitto\nMQTT_ADMIN_USER=%s\nMQTT_ADMIN_PASSWORD=%s\n' \
        "$MQTT_ADMIN_USER_DEFAULT" "$password" >"$MQTT_ADMIN_ENV.tmp"
    )
    mv "$MQTT_ADMIN_ENV.tmp" "$MQTT_ADMIN_ENV"
  fi
  if [[ ! -f $DYNSEC_FILE ]]; then
    DYNSEC_CREATED=1
    say "mosquitto: creating $DYNSEC_FILE (admin $(admin_env_get MQTT_ADMIN_USER))"
    (
      umask 077
      mosquitto_ctrl dynsec init "$DYNSEC_FILE" "$(admin_env_get MQTT_ADMIN_USER)" \
        "$(admin_env_get MQTT_ADMIN_PASSWORD)" >"$MQTT_DIR/dynsec-init.log" 2>&1
    ) || { show_log "$MQTT_DIR/dynsec-init.log"; die "mosquitto: mosquitto_ctrl dynsec init failed"; }
  fi
  chmod 600 "$DYNSEC_FILE" "$MQTT_ADMIN_ENV"
}

ready_mosquitto() {
  mosquitto_pub -h "$HOST" -p "$MQTT_PORT" -q 1 -t iothub/services/ready -m ping \
    -i "iothub-ready-$$" >/dev/null 2>&1
}

# The secure listener answers the admin through the plugin's control API. mosquitto_ctrl exits
# 0 even when the login is refused, so look for the answer itself.
ready_mosquitto_secure() {
  timeout 10 mosquitto_ctrl -h "$HOST" -p "$MQTT_SECURE_PORT" -i "iothub-ready-$$" --cafile "$MQTT_TLS/ca.crt" \
    -u "$(admin_env_get MQTT_ADMIN_USER)" -P "$(admin_env_get MQTT_ADMIN_PASSWORD)" \
    dynsec getDefaultACLAccess publishClientSend 2>/dev/null | grep -q '^publishClientSend'
}

write_mosquitto_conf() {
  # Started as root, mosquitto switches to the `mosquitto` user, which may not be able to reach
  # a repo checkout; `user root` keeps it as the user that started it (loopback-only dev broker).
  local user_line="" plugin
  if is_root; then user_line="user root"; fi
  plugin=$(dynsec_plugin) || exit 1
  # mosquitto.conf(5), 2.0: max_inflight_messages is per client (0 = no limit);
  # max_queued_* bound what a persistent session holds while its client is offline;
  # max_packet_size replaces the deprecated message_size_limit.
  # per_listener_settings true: allow_anonymous, plugin and plugin_opt_* below a `listener`
  # line apply to that listener only (verified on 2.0.11: anonymous clients are refused on the
  # secure port, and $CONTROL/dynamic-security is answered there only).
  cat >"$1" <<EOF
# written by scripts/services.sh — changes are overwritten on the next start
$user_line
per_listener_settings true
pid_file $MQTT_PID
persistence true
persistence_location $MQTT_DIR/data/
autosave_interval 60
persistent_client_expiration 1d
max_queued_messages 1000000
max_queued_bytes 0
max_inflight_messages 0
max_packet_size 1048576
set_tcp_nodelay true
log_dest file $MQTT_DIR/mosquitto.log
log_type error
log_type warning
log_type notice
log_timestamp_format %Y-%m-%dT%H:%M:%S

# Anonymous, loopback only: the test suite and local tools (MQTT_URL).
listener $MQTT_PORT $HOST
allow_anonymous true

# TLS and authenticated (MQTT_SECURE_URL, mqtts://): devices and the hub's service accounts,
# ACLs per client. Client certificates are optional (docs/security.md).
listener $MQTT_SECURE_PORT $HOST
cafile $MQTT_TLS/ca.crt
certfile $MQTT_TLS/server.crt
keyfile $MQTT_TLS/server.key
tls_version tlsv1.2
require_certificate false
allow_anonymous false
plugin $plugin
plugin_opt_config_file $DYNSEC_FILE
EOF
}

start_mosquitto() {
  mkdir -p "$MQTT_DIR/data"
  local conf="$MQTT_DIR/mosquitto.conf"
  if pid_alive "$MQTT_PID" mosquitto; then
    # Started by an older version of this script (e.g. without the secure listener): restart
    # with the new configuration. SIGTERM saves persistent sessions; clients reconnect.
    ensure_dynsec
    ensure_mqtt_tls
    write_mosquitto_conf "$conf.new"
    # A dynamic-security file created just now is only read at start.
    if [[ -z $DYNSEC_CREATED ]] && cmp -s "$conf" "$conf.new"; then
      rm -f "$conf.new"
      wait_for "$START_TIMEOUT" ready_mosquitto || { show_log "$MQTT_DIR/mosquitto.log"; die "mosquitto: running but not answering"; }
      wait_for "$START_TIMEOUT" ready_mosquitto_secure ||
        { show_log "$MQTT_DIR/mosquitto.log"; die "mosquitto: running but the admin is refused on $HOST:$MQTT_SECURE_PORT"; }
      say "mosquitto: already running on $HOST:$MQTT_PORT (anonymous) and $HOST:$MQTT_SECURE_PORT (authenticated)"
      return 0
    fi
    rm -f "$conf.new"
    say "mosquitto: configuration changed, restarting"
    stop_mosquitto
  elif ready_mosquitto; then
    using_external mosquitto "$MQTT_PORT"
    return 0
  fi
  check_port_free mosquitto "$MQTT_PORT"
  check_port_free mosquitto-secure "$MQTT_SECURE_PORT"
  rm -f "$MQTT_PID"
  ensure_dynsec
  ensure_mqtt_tls
  write_mosquitto_conf "$conf"
  say "mosquitto: starting…"
  local attempt
  for attempt in 1 2 3; do
    MQTT_BIND_ERRORS_BEFORE=$(mqtt_bind_errors)
    # Config errors are printed before the log file is opened: keep them in start.log.
    "$MOSQUITTO_BIN" -d -c "$conf" </dev/null >"$MQTT_DIR/start.log" 2>&1 9>&- ||
      { show_log "$MQTT_DIR/start.log"; show_log "$MQTT_DIR/mosquitto.log"; die "mosquitto: failed to start"; }
    wait_for "$START_TIMEOUT" mosquitto_settled || true
    ready_mosquitto && break
    # Our ports lie in Linux's ephemeral range: a connection of another process may have used one as
    # its local port, and after it closed it holds it for a minute (TIME-WAIT), though nothing
    # listens there (check_port_free saw it free).
    if ((attempt < 3)) && (($(mqtt_bind_errors) > MQTT_BIND_ERRORS_BEFORE)); then
      warn "mosquitto: its port is held by a connection (a closed one keeps it for a minute); starting again once that is gone:"
      mqtt_port_connections >&2
      wait_for 70 mqtt_ports_unused || true
      continue
    fi
    show_log "$MQTT_DIR/mosquitto.log"
    die "mosquitto: not answering on $HOST:$MQTT_PORT"
  done
  wait_for "$START_TIMEOUT" ready_mosquitto_secure ||
    { show_log "$MQTT_DIR/mosquitto.log"; die "mosquitto: the admin is refused on $HOST:$MQTT_SECURE_PORT"; }
  say "mosquitto: ready on $HOST:$MQTT_PORT (anonymous) and $HOST:$MQTT_SECURE_PORT (TLS, authenticated)"
}

mqtt_bind_errors() {
  local count
  count=$(grep -c "Address already in use" "$MQTT_DIR/mosquitto.log" 2>/dev/null) || true
  echo "${count:-0}"
}

# Mosquitto answers, or it could not bind its port.
mosquitto_settled() {
  ready_mosquitto || (($(mqtt_bind_errors) > MQTT_BIND_ERRORS_BEFORE))
}

mqtt_port_connections() {
  ss -tanH "( sport = :$MQTT_PORT or sport = :$MQTT_SECURE_PORT )" 2>/dev/null || true
}

mqtt_ports_unused() {
  [[ -z $(mqtt_port_connections) ]]
}

stop_mosquitto() {
  # SIGTERM makes mosquitto save its persistence file (and the plugin its JSON) before exiting.
  stop_pid mosquitto "$MQTT_PID" mosquitto 30
}

status_mosquitto() {
  if pid_alive "$MQTT_PID" mosquitto && port_open "$MQTT_PORT"; then
    local secure="secure $HOST:$MQTT_SECURE_PORT"
    port_open "$MQTT_SECURE_PORT" || secure="secure port $MQTT_SECURE_PORT closed: run up"
    say "mosquitto  running  $HOST:$MQTT_PORT  ($secure, pid $(pid_of "$MQTT_PID"))"
  elif ready_mosquitto; then
    say "mosquitto  running  $HOST:$MQTT_PORT  (not started from this checkout)"
  else
    say "mosquitto  stopped  $HOST:$MQTT_PORT"
  fi
}

# ---------------------------------------------------------------------------------------------
# Apache Kafka 4.x, single-node KRaft (broker + controller) — 127.0.0.1:$KAFKA_PORT

KAFKA_DIR="$SERVICES/kafka"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_PROPS="$KAFKA_DIR/server.properties"

install_kafka() {
  # Java 17 and Maven are on our machine image; install them only if a machine lacks them.
  command -v java >/dev/null || MISSING_PKGS+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || MISSING_PKGS+=(maven)
}

# The broker's jars from Maven Central (no Debian package). Skipped when the jars for the
# current pom.xml are present: a hash of the pom is kept next to them.
fetch_kafka_jars() {
  local stamp="$KAFKA_LIBS/.pom.sha256" want
  want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null; then
    return 0
  fi
  say "kafka: fetching jars with Maven (scripts/kafka/pom.xml)…"
  rm -rf "$KAFKA_LIBS"
  mkdir -p "$KAFKA_LIBS"
  local log="$ROOT/var/kafka/mvn.log"
  mvn -B -q -f "$KAFKA_POM" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" >"$log" 2>&1 ||
    { show_log "$log"; die "kafka: maven could not fetch the jars"; }
  echo "$want" >"$stamp"
  say "kafka: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in var/kafka/libs"
}

# Run one of Kafka's command-line classes: small heap, fast-starting JVM. No log4j2 config
# given, so log4j's default applies (errors only, to the console) and tools never write into
# the broker's log files.
kafka_tool() {
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$KAFKA_LIBS/*" "$@"
}

write_kafka_props() {
  # Combined broker+controller with a static voter set; replication factor 1 everywhere,
  # since with the default of 3 internal topics (consumer offsets, transactions, share groups)
  # are never created on one node and consumer groups never work.
  cat >"$KAFKA_PROPS" <<EOF
# written by scripts/services.sh — changes are overwritten on the next start
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=4
auto.create.topics.enable=true
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# tests join consumer groups constantly: do not wait 3 s for more members
group.initial.rebalance.delay.ms=0
EOF
}

# Client settings for our own tool calls (ready_kafka): fail in seconds, not the default minute.
write_kafka_tools_props() {
  mkdir -p "$KAFKA_DIR"
  cat >"$KAFKA_DIR/tools.properties" <<EOF
request.timeout.ms=5000
default.api.timeout.ms=15000
EOF
}

# Format the storage once. The cluster id is kept in a file: reformatting would need the
# same id (and --ignore-formatted), and a new id would orphan the existing data.
format_kafka() {
  [[ -f $KAFKA_DIR/data/meta.properties ]] && return 0
  local id
  if [[ -s $KAFKA_DIR/cluster-id ]]; then
    id=$(cat "$KAFKA_DIR/cluster-id")
  else
    id=$(kafka_tool kafka.tools.StorageTool random-uuid | tail -n 1)
    [[ -n $id ]] || die "kafka: could not generate a cluster id"
    echo "$id" >"$KAFKA_DIR/cluster-id"
  fi
  say "kafka: formatting storage (cluster id $id)…"
  # Static controller.quorum.voters, so no --standalone.
  kafka_tool kafka.tools.StorageTool format -t "$id" -c "$KAFKA_PROPS" >"$KAFKA_DIR/format.log" 2>&1 ||
    { show_log "$KAFKA_DIR/format.log"; die "kafka: storage format failed"; }
}

# Ready = the port accepts connections and the broker answers a metadata request (listing
# topics needs a live broker with an elected controller, unlike a bare port check).
ready_kafka() {
  port_open "$KAFKA_PORT" || return 1
  timeout 25 java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$KAFKA_LIBS/*" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_PORT" \
    --command-config "$KAFKA_DIR/tools.properties" --list >/dev/null 2>&1
}

# While waiting for a freshly started broker: stop waiting at once if it died.
kafka_started() {
  pid_alive "$KAFKA_PID" kafka.Kafka || { KAFKA_DIED=1; return 0; }
  ready_kafka
}

start_kafka() {
  local out="$KAFKA_DIR/kafka.out"
  write_kafka_tools_props
  if pid_alive "$KAFKA_PID" kafka.Kafka; then
    wait_for "$KAFKA_START_TIMEOUT" ready_kafka || { show_log "$KAFKA_DIR/logs/server.log"; die "kafka: running but not answering"; }
    say "kafka: already running on $HOST:$KAFKA_PORT"
    return 0
  fi
  if ready_kafka; then
    using_external kafka "$KAFKA_PORT"
    return 0
  fi
  check_port_free kafka "$KAFKA_PORT"
  check_port_free kafka-controller "$KAFKA_CONTROLLER_PORT"
  mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
  rm -f "$KAFKA_PID"
  write_kafka_props
  format_kafka
  say "kafka: starting…"
  # setsid: own session, so the broker outlives the shell (and the CI step) that started it.
  # The inner shell writes its own pid and then execs java, so the pid file holds java's pid.
  # 9>&-: do not hand our lock file to the daemon (it would hold the lock forever).
  # shellcheck disable=SC2016  # expanded by the inner shell, on purpose
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$KAFKA_PID" \
    java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dkafka.logs.dir="$KAFKA_DIR/logs" -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" </dev/null >"$out" 2>&1 9>&- &
  disown || true
  wait_for 10 test -s "$KAFKA_PID" || die "kafka: the launcher wrote no pid file"
  # Startup can be slow on a loaded 2-core machine.
  KAFKA_DIED=
  if ! wait_for "$KAFKA_START_TIMEOUT" kafka_started || [[ -n $KAFKA_DIED ]]; then
    show_log "$out"
    show_log "$KAFKA_DIR/logs/server.log"
    [[ -n $KAFKA_DIED ]] && die "kafka: the broker exited during startup"
    die "kafka: not ready on $HOST:$KAFKA_PORT after ${KAFKA_START_TIMEOUT}s"
  fi
  say "kafka: ready on $HOST:$KAFKA_PORT"
}

stop_kafka() {
  # SIGTERM = controlled shutdown (flushes logs, writes the clean-shutdown marker).
  stop_pid kafka "$KAFKA_PID" kafka.Kafka 60
}

status_kafka() {
  if pid_alive "$KAFKA_PID" kafka.Kafka && port_open "$KAFKA_PORT"; then
    say "kafka      running  $HOST:$KAFKA_PORT  (controller $HOST:$KAFKA_CONTROLLER_PORT, pid $(pid_of "$KAFKA_PID"))"
  elif port_open "$KAFKA_PORT"; then
    say "kafka      running  $HOST:$KAFKA_PORT  (not started from this checkout)"
  else
    say "kafka      stopped  $HOST:$KAFKA_PORT"
  fi
}

# ---------------------------------------------------------------------------------------------
# Chromium — not a service: the browser tests need it, and this is where we install things.

install_chromium() {
  # gettext: makemessages/compilemessages (the i18n test); fonts-noto-cjk: Korean in the browser
  # tests and the screenshot gallery. (npm, for axe-core in bootstrap.sh, comes with Node.js.)
  need_pkg chromium chromium-driver gettext fonts-noto-cjk
}

# ---------------------------------------------------------------------------------------------
# TimescaleDB — built once per machine from the vendored release source against PostgreSQL
# 15.18 taken from Debian's .debs and extracted beside it (the system PostgreSQL is left alone).
# 15.18, not the current 15.20 security update: with 15.20 every TimescaleDB 2.28.3 job run ends
# "Failed" (SQLSTATE 24000, "cannot drop portal") although its work is committed. CI clones
# afresh each run, so the build lives in a machine cache outside the clone, keyed by the
# source's sha256 and the PostgreSQL version.

TSDB_SOURCE="$ROOT/../shared/vendor/timescaledb-2.28.3.tar.gz"
TSDB_PG_VERSION=15.18-0+deb12u1
TSDB_DEBS=(postgresql-15 postgresql-client-15 postgresql-server-dev-15 libpq-dev libpq5)
CACHE="${IOTHUB_CACHE:-/var/cache/iothub}"

tsdb_root() {
  local sha
  sha=$(cut -d' ' -f1 "$TSDB_SOURCE.sha256" 2>/dev/null || sha256sum "$TSDB_SOURCE" | cut -d' ' -f1)
  echo "$CACHE/timescaledb-${sha:0:12}-pg$TSDB_PG_VERSION"
}

tsdb_built() {
  [[ -f "$(tsdb_root)/.built" ]]
}

install_timescaledb() {
  [[ -f $TSDB_SOURCE ]] || die "timescaledb: $TSDB_SOURCE not found (../shared/vendor beside the clone)"
  tsdb_built || need_pkg cmake build-essential libssl-dev libkrb5-dev
}

build_timescaledb() {
  tsdb_built && return 0
  local root work log
  root=$(tsdb_root)
  mkdir -p "$CACHE"
  work=$(mktemp -d "$CACHE/.build-XXXXXX")
  log="$work/build.log"
  say "timescaledb: building $(basename "$TSDB_SOURCE") against PostgreSQL $TSDB_PG_VERSION (2–3 min, log $log)…"
  (
    set -e
    echo "$(sha256sum "$TSDB_SOURCE" | cut -d' ' -f1)  $(basename "$TSDB_SOURCE")" >"$work/source.sha256"
    if [[ -f $TSDB_SOURCE.sha256 ]]; then cmp -s <(cut -d' ' -f1 "$TSDB_SOURCE.sha256") <(cut -d' ' -f1 "$work/source.sha256"); fi
    mkdir "$work/debs" "$work/root"
    cd "$work/debs"
    apt-get download "${TSDB_DEBS[@]/%/=$TSDB_PG_VERSION}" || { apt-get update -q && apt-get download "${TSDB_DEBS[@]/%/=$TSDB_PG_VERSION}"; }
    for deb in ./*.deb; do dpkg-deb -x "$deb" "$work/root"; done
    tar -xzf "$TSDB_SOURCE" -C "$work"
    cd "$work"/timescaledb-*/
    ./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
      -DPG_CONFIG="$work/root/usr/lib/postgresql/15/bin/pg_config"
    cd build
    make -j"$(nproc)"
    make install
  ) >"$log" 2>&1 || { show_log "$log"; die "timescaledb: build failed (log $log)"; }
  rm -rf "$root"
  mv "$work/root" "$root"
  cp "$log" "$root/build.log"
  touch "$root/.built"
  chmod -R a+rX "$root"
  rm -rf "$work"
  say "timescaledb: built into $root"
}

# ---------------------------------------------------------------------------------------------
# subcommands

# One `up`/`down` at a time (two test runs starting services together would race).
take_lock() {
  mkdir -p "$SERVICES"
  exec 9>"$SERVICES/.lock"
  flock -w 600 9 || die "another services.sh up/down is running"
}

# A secret key for the hub processes run against these services (settings refuse to start
# without one): made once per checkout, kept in var/ (git-ignored), exported by `env`.
DEV_SECRET="$SERVICES/secret_key"
ensure_dev_secret() {
  [[ -s $DEV_SECRET ]] && return 0
  (umask 077 && od -An -N48 -tx1 /dev/urandom | tr -d ' \n' >"$DEV_SECRET")
}

cmd_up() {
  local started=$SECONDS
  take_lock
  ensure_dev_secret
  PG_PARENT=$(pg_parent)
  install_postgres
  install_redis
  install_mosquitto
  install_kafka
  install_chromium
  install_timescaledb
  apt_install_missing
  fetch_kafka_jars
  build_timescaledb

  start_postgres
  start_timescaledb
  start_redis
  start_mosquitto
  start_kafka
  say "all services up in $((SECONDS - started)) s — use them with: eval \"\$(scripts/services.sh env)\""
}

cmd_down() {
  take_lock
  PG_PARENT=$(pg_parent)
  # Reverse order of start.
  stop_kafka
  stop_mosquitto
  stop_redis
  stop_timescaledb
  stop_postgres
}

cmd_status() {
  PG_PARENT=$(pg_parent)
  status_postgres
  status_timescaledb
  status_redis
  status_mosquitto
  status_kafka
}

# Nothing but export lines on stdout, so that eval "$(scripts/services.sh env)" works.
cmd_env() {
  cat <<EOF
export DATABASE_URL=postgres://iothub:iothub@$HOST:$PG_PORT/iothub
export TIMESCALEDB_URL=postgres://iothub:iothub@$HOST:$TSDB_PORT/iothub
export REDIS_URL=redis://$HOST:$REDIS_PORT/0
export CELERY_BROKER_URL=redis://$HOST:$REDIS_PORT/1
export MQTT_URL=mqtt://$HOST:$MQTT_PORT
export MQTT_SECURE_URL=mqtts://$HOST:$MQTT_SECURE_PORT
export MQTTS_URL=mqtts://$HOST:$MQTT_SECURE_PORT
export KAFKA_BOOTSTRAP_SERVERS=$HOST:$KAFKA_PORT
EOF
  if [[ -r $DEV_SECRET ]]; then printf 'export SECRET_KEY=%s\n' "$(cat "$DEV_SECRET")"; fi
  # The CA of the TLS listener (that of a Mosquitto another checkout started, if it runs).
  local ca="$MQTT_TLS/ca.crt"
  [[ -r $ca ]] || ca="$(dirname "$(running_admin_env)")/tls/ca.crt"
  if [[ -r $ca ]]; then printf 'export IOTHUB_MQTT_CA=%s\n' "$ca"; fi
  # The dynamic-security admin (the hub provisions device credentials with it); absent until
  # `up` has created it, or when admin.env is not readable by this user. A Mosquitto reused from
  # another checkout of this machine keeps its admin.env beside its own config.
  local admin_user admin_password
  [[ -r $MQTT_ADMIN_ENV ]] || MQTT_ADMIN_ENV=$(running_admin_env)
  admin_user=$(admin_env_get MQTT_ADMIN_USER)
  admin_password=$(admin_env_get MQTT_ADMIN_PASSWORD)
  if [[ -n $admin_user && -n $admin_password ]]; then
    printf 'export MQTT_ADMIN_URL=mqtts://%s:%s@%s:%s\n' "$admin_user" "$admin_password" "$HOST" "$MQTT_SECURE_PORT"
  fi
}

# One service stopped and started again (the fault tests use it): postgres|timescaledb|redis|mosquitto|kafka,
# optionally kept down for SECONDS (an outage rather than a quick restart).
cmd_restart() {
  local name=${1:-} down_for=${2:-0}
  case "$name" in
    postgres | timescaledb | redis | mosquitto | kafka) ;;
    *) die "usage: $0 restart postgres|timescaledb|redis|mosquitto|kafka [SECONDS_DOWN]" ;;
  esac
  [[ $down_for =~ ^[0-9]+([.][0-9]+)?$ ]] || die "restart: SECONDS_DOWN must be a number"
  take_lock
  PG_PARENT=$(pg_parent)
  "stop_$name"
  # A service another checkout started is left running by stop_*: say so instead of pretending.
  if "ready_$name"; then die "$name still answers: it was not started from this checkout"; fi
  sleep "$down_for"
  "start_$name"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  restart) cmd_restart "${2:-}" "${3:-0}" ;;
  *)
    warn "usage: $0 up|down|status|env|restart NAME [SECONDS_DOWN]"
    exit 2
    ;;
esac
