#!/usr/bin/env bash
# PostgreSQL for development and CI.
#   deploy/postgres.sh up     when nothing answers on 127.0.0.1:$PGPORT: install PostgreSQL from Debian
#                             packages if missing, create a cluster, start it; then create the role and the
#                             service databases (dev and test) if they are missing
#   deploy/postgres.sh down   stop the cluster started by `up`
#   deploy/postgres.sh status exit 0 when the server answers
# Idempotent. The cluster trusts connections from 127.0.0.1 only: it is for dev and CI, never production.
set -euo pipefail

PGPORT="${CLIENTELA_PG_PORT:-5432}"
PGDATA="${CLIENTELA_PGDATA:-/var/tmp/clientela/pgdata}"
ROLE="${CLIENTELA_PG_USER:-clientela}"
PASSWORD="${CLIENTELA_PG_PASSWORD:-clientela}"
SERVICES="ingest profile segmentation"

log() { echo "postgres: $*" >&2; }

bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [[ -x "$d/postgres" ]] && { echo "$d"; return; }
  done
}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$PGPORT") 2>/dev/null; }

as_owner() {
  # PostgreSQL refuses to run as root: run its programs as the `postgres` user then.
  if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install() {
  [[ -n "$(bindir)" ]] && return
  log "installing PostgreSQL from Debian packages"
  local sudo=""; [[ "$(id -u)" == 0 ]] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends postgresql postgresql-client
}

start_cluster() {
  local bin; bin="$(bindir)"
  mkdir -p "$(dirname "$PGDATA")"
  if [[ "$(id -u)" == 0 ]]; then chown postgres:postgres "$(dirname "$PGDATA")"; fi
  if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
    log "creating cluster in $PGDATA"
    as_owner "$bin/initdb" -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$PGDATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$PGDATA'
max_connections = 300
# Ingest locks each record of a batch (up to 1,000) while storing it: room for several batches at once.
max_locks_per_transaction = 512
fsync = on
shared_buffers = 256MB
# The services' tables live in memory or on SSD: a random page costs about what a sequential one does.
# With the default 4 the planner answered the consumers' batch lookups (= ANY of 500-1,000 keys) with
# sequential scans at 150,000 rows (measured; 19-64 ms each, against 3-9 ms through the indexes), and their
# cost grew with the tenant.
random_page_cost = 1.1
CONF
    cat >"$PGDATA/pg_hba.conf" <<CONF
local all all trust
host  all all 127.0.0.1/32 trust
CONF
  fi
  log "starting on 127.0.0.1:$PGPORT (log: $PGDATA/server.log)"
  # Settings the project relies on are passed at every start, so clusters created by older scripts get them.
  as_owner "$bin/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 \
    -o "-c max_connections=300 -c max_locks_per_transaction=512 -c random_page_cost=1.1" start >/dev/null
}

psql_admin() {
  PGPASSWORD="${CLIENTELA_PG_ADMIN_PASSWORD:-}" psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" \
    -U "${CLIENTELA_PG_ADMIN_USER:-postgres}" -d postgres "$@"
}

create_databases() {
  command -v psql >/dev/null || install
  psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname='$ROLE'" | grep -q 1 ||
    psql_admin -c "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'"
  local s db
  for s in $SERVICES; do
    for db in "clientela_$s" "clientela_${s}_test"; do
      psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1 ||
        { log "creating database $db"; psql_admin -c "CREATE DATABASE $db OWNER $ROLE"; }
    done
  done
}

up() {
  if answers; then
    log "a server already answers on 127.0.0.1:$PGPORT; using it"
  else
    install
    start_cluster
  fi
  create_databases
  log "ready: postgresql+psycopg://$ROLE:***@127.0.0.1:$PGPORT/clientela_<service>"
}

down() {
  local bin; bin="$(bindir)"
  if [[ -n "$bin" && -f "$PGDATA/postmaster.pid" ]]; then as_owner "$bin/pg_ctl" -D "$PGDATA" -m fast stop; fi
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) answers ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
