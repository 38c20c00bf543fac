# event-consumer image: `docker build -t event-consumer .`
# The console script is the entrypoint, so the command is the subcommand:
#   docker run --rm -e DATABASE_URL=... -e KAFKA_BOOTSTRAP_SERVERS=... event-consumer migrate

# The native fast path (native/, Rust): built into a wheel in a stage of its own, so the image
# carries neither the toolchain nor the build tree. (Not built on the project's machines, which
# have no Docker engine; without the wheel the consumer would run its Python path.)
FROM rust:1-slim-bookworm AS native
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && rm -rf /var/lib/apt/lists/*
COPY native /src/native
RUN python3 -m venv /build && /build/bin/pip install --no-cache-dir "maturin>=1.5,<2" \
    && /build/bin/maturin build --release --manifest-path /src/native/Cargo.toml --out /wheels

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package needs: never the working tree's .env, .venv or tests.
COPY pyproject.toml README.md /tmp/src/
COPY consumer /tmp/src/consumer
COPY handlers /tmp/src/handlers
COPY database /tmp/src/database
COPY --from=native /wheels /tmp/wheels
RUN pip install /tmp/src /tmp/wheels/*.whl && rm -rf /tmp/src /tmp/wheels

RUN useradd --create-home --uid 10001 --user-group app
USER app
# An empty working directory: no .env is picked up inside the container; configure it with environment variables.
WORKDIR /home/app

# `run` serves /healthz, /readyz and /metrics on HTTP_PORT (default 8000).
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HTTP_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["event-consumer"]
CMD ["run"]
