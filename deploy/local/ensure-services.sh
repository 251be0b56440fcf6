#!/usr/bin/env bash
# Makes sure the local services the gateway (and its tests) need are up.
# Usage: ensure-services.sh rabbitmq [postgres]
# RabbitMQ: started when installed but stopped; when missing, says how to get it and fails.
# PostgreSQL (tests only): started when installed but stopped; when missing, the storage tests
# skip with the reason, except under CI=true where they fail.
set -u

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 "$2"); do port_open "$1" && return 0; sleep 1; done
  return 1
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    cat >&2 <<'MSG'
RabbitMQ is not running on 127.0.0.1:5672 and is not installed.
Install it (Debian/Ubuntu: `sudo apt-get install -y rabbitmq-server`), or point
INTAKE_AMQP_URL at a broker you run elsewhere, then run this again.
MSG
    return 1
  fi
  echo "starting the local RabbitMQ (rabbitmq-server -detached) ..."
  rabbitmq-server -detached >/dev/null 2>&1 || true
  if ! wait_port 5672 60; then
    echo "RabbitMQ did not come up on 127.0.0.1:5672 within 60 s; see /var/log/rabbitmq/" >&2
    return 1
  fi
  # The port opens before the node finishes booting.
  rabbitmqctl await_startup >/dev/null 2>&1 || sleep 3
  echo "RabbitMQ is up"
}

ensure_postgres() {
  port_open 5432 && return 0
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    version=$(ls /etc/postgresql | head -n 1)
    echo "starting the local PostgreSQL $version ..."
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    wait_port 5432 30 && { echo "PostgreSQL is up"; return 0; }
  fi
  echo "PostgreSQL is not reachable on 127.0.0.1:5432: its tests will be skipped" >&2
  [ "${CI:-}" = "true" ] && return 1
  return 0
}

status=0
for service in "$@"; do
  case "$service" in
    rabbitmq) ensure_rabbitmq || status=1 ;;
    postgres) ensure_postgres || status=1 ;;
    *) echo "unknown service $service" >&2; status=2 ;;
  esac
done
exit $status
