#!/usr/bin/env bash
# Local services for event-consumer without Docker: a PostgreSQL cluster of its own
# (Debian's postgresql package) and a real Apache Kafka broker (KRaft, single node)
# run from its jars on Maven Central. Every command is idempotent.
#
#   scripts/services.sh install        apt packages + Kafka jars (cached under $EC_HOME)
#   scripts/services.sh start          install, then start PostgreSQL and Kafka, wait until both answer
#   scripts/services.sh stop           stop both
#   scripts/services.sh status
#   scripts/services.sh env            print the export lines for KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL
#   scripts/services.sh pg-start|pg-stop|kafka-start|kafka-stop   (used by the fault tests)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
EC_HOME="${EC_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/event-consumer}"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka/pom.xml")"
KAFKA_LIBS="$EC_HOME/kafka-$KAFKA_VERSION/libs"
KAFKA_DIR="$EC_HOME/kafka-run"
KAFKA_PORT="${EC_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${EC_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_SASL_PORT="${EC_KAFKA_SASL_PORT:-9094}"
PG_CLUSTER="${EC_PG_CLUSTER:-eventconsumer}"
PG_PORT="${EC_PG_PORT:-5433}"
PG_DB="event_consumer"
PG_USER="event_consumer"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_apt() {
  local missing=()
  command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
  [ -d /usr/lib/postgresql ] && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
  command -v kcat >/dev/null 2>&1 || missing+=(kcat)
  command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

install_kafka() {
  if [ -f "$KAFKA_LIBS/.complete" ]; then return; fi
  log "resolving Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS"
  rm -rf "$KAFKA_LIBS"; mkdir -p "$KAFKA_LIBS"
  mvn -q -B -f "$HERE/kafka/pom.xml" dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS" \
    || die "maven could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
  touch "$KAFKA_LIBS/.complete"
}

pg_version() { ls /usr/lib/postgresql | sort -n | tail -1; }

pg_start() {
  local v; v="$(pg_version)"
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$v $PG_CLUSTER"; then
    log "creating PostgreSQL $v cluster '$PG_CLUSTER' on port $PG_PORT"
    as_root pg_createcluster "$v" "$PG_CLUSTER" -p "$PG_PORT" >/dev/null -- --auth-local=trust --auth-host=trust
    # A cluster of our own for local development and tests: loopback only, trust auth.
    local conf="/etc/postgresql/$v/$PG_CLUSTER/postgresql.conf"
    as_root sh -c "cat >> '$conf'" <<EOF
listen_addresses = '127.0.0.1'
max_connections = 200
fsync = ${EC_PG_FSYNC:-on}
EOF
  fi
  if ! pg_lsclusters -h | awk -v v="$v" -v c="$PG_CLUSTER" '$1==v && $2==c {print $4}' | grep -q online; then
    as_root pg_ctlcluster "$v" "$PG_CLUSTER" start
  fi
  for _ in $(seq 1 60); do
    if pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; then break; fi
    sleep 0.5
  done
  pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || die "PostgreSQL did not answer on 127.0.0.1:$PG_PORT"
  psql_admin() { as_root su postgres -c "psql -q -p $PG_PORT -h /var/run/postgresql -tAc \"$1\""; }
  if [ "$(psql_admin "select 1 from pg_roles where rolname='$PG_USER'")" != 1 ]; then
    psql_admin "create role $PG_USER login createdb"
  fi
  if [ "$(psql_admin "select 1 from pg_database where datname='$PG_DB'")" != 1 ]; then
    psql_admin "create database $PG_DB owner $PG_USER"
  fi
}

pg_stop() {
  local v; v="$(pg_version)"
  if pg_lsclusters -h 2>/dev/null | awk -v v="$v" -v c="$PG_CLUSTER" '$1==v && $2==c {print $4}' | grep -q online; then
    as_root pg_ctlcluster "$v" "$PG_CLUSTER" stop -m "${1:-fast}"
  fi
}

kafka_config() {
  mkdir -p "$KAFKA_DIR"
  cat > "$KAFKA_DIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$KAFKA_DIR/data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
message.max.bytes=2097152
EOF
}

kafka_pid() { [ -f "$KAFKA_DIR/kafka.pid" ] && cat "$KAFKA_DIR/kafka.pid" || true; }
kafka_running() { local p; p="$(kafka_pid)"; [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

kafka_ready() { kcat -b "127.0.0.1:$KAFKA_PORT" -L -m 3 >/dev/null 2>&1; }

kafka_start() {
  install_kafka
  kafka_config
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    local cid
    cid="$(java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
    log "formatting Kafka storage (cluster $cid)"
    # The SCRAM user is only for the SASL listener's tests; it guards nothing but a loopback port.
    java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format -t "$cid" -c "$KAFKA_DIR/server.properties" \
      --add-scram "SCRAM-SHA-256=[name=${EC_KAFKA_SASL_USER:-ec-test},password=${EC_KAFKA_SASL_PASSWORD:-ec-test-secret}]" \
      --add-scram "SCRAM-SHA-512=[name=${EC_KAFKA_SASL_USER:-ec-test},password=${EC_KAFKA_SASL_PASSWORD:-ec-test-secret}]" \
      >"$KAFKA_DIR/format.log" 2>&1 || { cat "$KAFKA_DIR/format.log" >&2; die "kafka storage format failed"; }
  fi
  if ! kafka_running; then
    log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (logs: $KAFKA_DIR/server.log)"
    setsid nohup java -Xms256m -Xmx768m -XX:+UseG1GC \
      -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" \
      -Dkafka.logs.file="$KAFKA_DIR/server.log" \
      -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
      >"$KAFKA_DIR/stdout.log" 2>&1 < /dev/null &
    echo $! > "$KAFKA_DIR/kafka.pid"
  fi
  for _ in $(seq 1 120); do
    if kafka_ready; then return 0; fi
    kafka_running || { tail -50 "$KAFKA_DIR/stdout.log" "$KAFKA_DIR/server.log" >&2 || true; die "Kafka exited during start-up"; }
    sleep 0.5
  done
  die "Kafka did not answer on 127.0.0.1:$KAFKA_PORT within 60 s (see $KAFKA_DIR/server.log)"
}

kafka_stop() {
  local p; p="$(kafka_pid)"
  if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
    kill "$p"
    for _ in $(seq 1 60); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$p" 2>/dev/null || true
  fi
  rm -f "$KAFKA_DIR/kafka.pid"
}

print_env() {
  cat <<EOF
export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT
export DATABASE_URL=postgresql+asyncpg://$PG_USER@127.0.0.1:$PG_PORT/$PG_DB
export EC_SERVICES_SCRIPT=$HERE/services.sh
export EC_KAFKA_LIBS=$KAFKA_LIBS
export EC_KAFKA_SASL_BOOTSTRAP=127.0.0.1:$KAFKA_SASL_PORT
EOF
}

case "${1:-}" in
  install) install_apt; install_kafka ;;
  start) install_apt; install_kafka; pg_start; kafka_start; log "PostgreSQL on 127.0.0.1:$PG_PORT and Kafka on 127.0.0.1:$KAFKA_PORT are up" ;;
  stop) kafka_stop; pg_stop ;;
  status)
    pg_isready -h 127.0.0.1 -p "$PG_PORT" || true
    if kafka_ready; then echo "kafka 127.0.0.1:$KAFKA_PORT - accepting requests"; else echo "kafka 127.0.0.1:$KAFKA_PORT - not answering"; fi ;;
  env) print_env ;;
  pg-start) pg_start ;;
  pg-stop) pg_stop "${2:-fast}" ;;
  kafka-start) kafka_start ;;
  kafka-stop) kafka_stop ;;
  kafka-reset) kafka_stop; rm -rf "$KAFKA_DIR" ;;
  *) echo "usage: $0 install|start|stop|status|env|pg-start|pg-stop|kafka-start|kafka-stop|kafka-reset" >&2; exit 2 ;;
esac
