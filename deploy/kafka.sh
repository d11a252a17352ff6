#!/usr/bin/env bash
# Real Apache Kafka (KRaft, single node) for development and CI.
#   deploy/kafka.sh up      fetch the broker from Maven Central (cached), format storage, start, wait until ready
#   deploy/kafka.sh down    stop the broker started by `up`
#   deploy/kafka.sh status  exit 0 when the broker answers
#   deploy/kafka.sh reset   stop and delete its data
# Idempotent: `up` on a running broker does nothing.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka/pom.xml")"
CACHE="${CLIENTELA_CACHE:-$HOME/.cache/clientela}"
LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
RUN_DIR="${CLIENTELA_KAFKA_DIR:-$CACHE/kafka-run}"
DATA_DIR="$RUN_DIR/data"
PORT="${CLIENTELA_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${CLIENTELA_KAFKA_CONTROLLER_PORT:-9093}"
PID_FILE="$RUN_DIR/kafka.pid"
LOG_FILE="$RUN_DIR/kafka.log"
CP="$LIBS/*"

log() { echo "kafka: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

running() { [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

fetch() {
  if [[ -f "$LIBS/.complete" ]]; then return; fi
  command -v mvn >/dev/null || { log "Maven (mvn) is required to fetch the broker"; exit 1; }
  command -v java >/dev/null || { log "Java 17 is required to run the broker"; exit 1; }
  log "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $LIBS"
  rm -rf "$LIBS" && mkdir -p "$LIBS"
  mvn -q -B -Dstyle.color=never -f "$HERE/kafka/pom.xml" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS"
  touch "$LIBS/.complete"
}

configure() {
  mkdir -p "$RUN_DIR" "$DATA_DIR"
  sed -e "s|@DATA_DIR@|$DATA_DIR|" -e "s|@PORT@|$PORT|" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|" \
    "$HERE/kafka/server.properties.in" > "$RUN_DIR/server.properties"
  if [[ ! -f "$DATA_DIR/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(java -cp "$CP" kafka.tools.StorageTool random-uuid)"
    log "formatting storage (cluster $cluster_id)"
    java -cp "$CP" -Dlog4j2.configurationFile="$HERE/kafka/log4j2.xml" kafka.tools.StorageTool \
      format -t "$cluster_id" -c "$RUN_DIR/server.properties" --ignore-formatted >>"$LOG_FILE" 2>&1
  fi
}

up() {
  if running && port_open; then log "already running on 127.0.0.1:$PORT"; return; fi
  if port_open; then log "something already answers on 127.0.0.1:$PORT; using it"; return; fi
  fetch
  configure
  log "starting broker on 127.0.0.1:$PORT (log: $LOG_FILE)"
  : >"$LOG_FILE.start"
  # setsid: the broker outlives the shell that started it (make run, CI steps).
  setsid nohup java -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$HERE/kafka/log4j2.xml" \
    -cp "$CP" kafka.Kafka "$RUN_DIR/server.properties" >"$LOG_FILE.start" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  local deadline=$((SECONDS + ${CLIENTELA_KAFKA_START_TIMEOUT:-90}))
  until grep -q "Kafka Server started" "$LOG_FILE.start" 2>/dev/null && port_open; do
    if ! running; then
      log "broker exited during start-up; last lines:"; tail -n 30 "$LOG_FILE.start" >&2; exit 1
    fi
    if ((SECONDS > deadline)); then log "not ready in time"; tail -n 30 "$LOG_FILE.start" >&2; exit 1; fi
    sleep 0.5
  done
  cat "$LOG_FILE.start" >>"$LOG_FILE"
  log "ready on 127.0.0.1:$PORT (pid $(cat "$PID_FILE"))"
}

down() {
  if running; then
    local pid; pid="$(cat "$PID_FILE")"
    log "stopping pid $pid"
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) port_open ;;
  reset) down; rm -rf "$DATA_DIR" ;;
  fetch) fetch ;;
  *) echo "usage: $0 up|down|status|reset|fetch" >&2; exit 2 ;;
esac
