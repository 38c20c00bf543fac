#!/usr/bin/env bash
# The whole test suite against the real Kafka broker and PostgreSQL: installs and starts them
# (scripts/services.sh), prepares .venv, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/services.sh start
bash scripts/bootstrap.sh
eval "$(bash scripts/services.sh env)"
echo "[test] Kafka at $KAFKA_BOOTSTRAP_SERVERS, PostgreSQL at ${DATABASE_URL%%@*}@... (real services, no fakes)"
exec .venv/bin/python -m pytest "$@"
