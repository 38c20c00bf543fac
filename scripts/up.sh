#!/usr/bin/env bash
# Starts a local Kafka and PostgreSQL, migrates the schema and runs the consumer in the foreground.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/services.sh start
bash scripts/bootstrap.sh
eval "$(bash scripts/services.sh env)"
.venv/bin/event-consumer migrate
exec .venv/bin/event-consumer run
