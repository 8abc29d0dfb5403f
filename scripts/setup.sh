#!/usr/bin/env bash
# Install what EduGate needs on Debian bookworm / Raspberry Pi OS (as root) into ./.venv.
#   bash scripts/setup.sh            # runtime + test extras
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)  # the docs' recipe to watch the wire (tests run it)
command -v victoria-metrics >/dev/null 2>&1 || need_apt+=(victoria-metrics)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v nats-server >/dev/null 2>&1 || need_apt+=(nats-server)  # central on a cluster (tests, docs/central.md)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need_apt+=(rabbitmq-server)  # central's RabbitMQ cluster (tests start their own nodes)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)  # the PostgreSQL event store
[ -f /usr/share/doc/opencv-doc/examples/data/vtest.avi ] || need_apt+=(opencv-doc)  # the people counter's labelled frames (ml_models/people)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi
# Debian's mosquitto package may start a system broker where an init system runs; EduGate never uses
# it: tests and the demo start their own brokers on free loopback ports.
# The same for rabbitmq-server: where an init system started one, stop it (systemctl disable --now
# rabbitmq-server); the tests' nodes use their own ports, Erlang cookie and epmd port.

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
echo "ready: $(.venv/bin/edugate --help >/dev/null && echo 'edugate installed in .venv')"
