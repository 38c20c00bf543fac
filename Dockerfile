# event-consumer image: `docker build -t event-consumer .`
# The console script is the entrypoint, so the command is the subcommand:
#   docker run --rm -e DATABASE_URL=... -e KAFKA_BOOTSTRAP_SERVERS=... event-consumer migrate
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
RUN pip install /tmp/src && rm -rf /tmp/src

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
