"""Console script `event-consumer` (also `python -m consumer`)."""

import argparse
import asyncio
import sys
from pathlib import Path

import structlog

from consumer.logs import configure_logging
from consumer.settings import Settings, SettingsError, load_settings

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="event-consumer", description="Kafka user/order events -> PostgreSQL read model.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("migrate", help="upgrade the database schema to head")
    sub.add_parser("run", help="run the consumer until SIGTERM/SIGINT")
    pub = sub.add_parser("publish", help="validate NDJSON envelopes and publish them keyed by entity id")
    pub.add_argument("--topic", help="target topic (required unless --generate)")
    pub.add_argument("file", nargs="?", default="-", help="NDJSON file, or - for standard input (default)")
    pub.add_argument("--generate", type=int, metavar="N", help="publish N generated user and order events instead")
    pub.add_argument("--seed", type=int, default=1, help="seed for --generate (default 1)")
    sub.add_parser("schema", help="print the JSON Schema of the event envelope")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schema":
        import orjson

        from handlers.events import event_json_schema

        sys.stdout.write(orjson.dumps(event_json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n")
        return 0
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"event-consumer: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format)
    log = structlog.get_logger("consumer.cli")
    try:
        return _dispatch(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError

        from consumer.app import StartupError

        if isinstance(exc, StartupError):
            log.error(str(exc))
            return 1
        if isinstance(exc, (DBAPIError, OSError)):
            # The driver's own message (never the DSN, so never the password).
            detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            log.error("database error", command=args.command, error=f"{type(exc).__name__}: {detail}")
            return 1
        raise


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "migrate":
        from database.migrate import upgrade

        upgrade(settings.database_url.get_secret_value())
        structlog.get_logger("consumer.cli").info("database schema at head")
        return 0
    if args.command == "run":
        from consumer.app import run

        return asyncio.run(run(settings))
    if args.command == "publish":
        from consumer.publish import publish_file, publish_generated

        if args.generate is not None:
            return asyncio.run(publish_generated(settings, args.generate, args.topic, args.seed))
        if not args.topic:
            print("event-consumer publish: --topic is required when publishing a file", file=sys.stderr)
            return EXIT_CONFIG
        if args.file == "-":
            return asyncio.run(publish_file(settings, args.topic, sys.stdin.buffer))
        with Path(args.file).open("rb") as fh:
            return asyncio.run(publish_file(settings, args.topic, fh))
    raise AssertionError(args.command)  # argparse rejects anything else
