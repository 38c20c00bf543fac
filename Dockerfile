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

ENTRYPOINT ["event-consumer"]
CMD ["run"]
