"""Console script `event-consumer` (also `python -m consumer`)."""

import argparse
import asyncio
import sys
from pathlib import Path

import structlog

from consumer.logs import configure_logging
from consumer.settings import Settings, SettingsError, load_settings

EXIT_CONFIG = 2


EPILOG = """\
configuration: environment variables, then a .env file in the working directory
(.env.example lists every one with its default); `event-consumer check` prints what is in effect.
exit codes: 0 done; 1 failed (the log says why); 2 bad arguments, settings or input file;
128+N stopped by signal N (replay)."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    try:
        package = version("event-consumer")
    except PackageNotFoundError:  # run from a source tree that is not installed
        package = "unknown"
    native = "built" if find_spec("ec_native") is not None else "not built (the Python path runs)"
    return f"event-consumer {package} (native fast path: {native})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="event-consumer", description="Kafka user/order events -> PostgreSQL read model.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("migrate", help="upgrade the database schema to head")
    sub.add_parser("run", help="run the consumer until SIGTERM/SIGINT")
    pub = sub.add_parser("publish", help="validate NDJSON envelopes and publish them keyed by entity id")
    pub.add_argument("--topic", help="target topic (required unless --generate)")
    pub.add_argument("file", nargs="?", default="-", help="NDJSON file, or - for standard input (default)")
    pub.add_argument("--generate", type=int, metavar="N", help="publish N generated user and order events instead")
    pub.add_argument("--seed", type=int, default=1, help="seed for --generate (default 1)")
    sub.add_parser("schema", help="print the JSON Schema of the event envelope")
    asyncapi = sub.add_parser("asyncapi", help="print the AsyncAPI 3.0 document of the service (asyncapi.yaml)")
    asyncapi.add_argument("--output", metavar="PATH", help="write it to PATH instead of standard output")
    offsets = sub.add_parser("offsets", help="show or reset the group's position (Kafka and database)")
    offsets_sub = offsets.add_subparsers(dest="offsets_command", required=True, metavar="ACTION")
    show = offsets_sub.add_parser("show", help="committed offset, database position, end offset and lag per partition")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    reset = offsets_sub.add_parser("reset", help="move the stopped group's position in Kafka and the database")
    reset.add_argument("--to", required=True, type=_reset_target, metavar="earliest|latest|ISO8601", help="where to move")
    reset.add_argument("--topic", help="only this topic (one of KAFKA_TOPICS)")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sub.add_parser("check", help="check Kafka topics, DLQ topics and the database schema; print the settings")
    from consumer.replay import add_parser as add_replay_parser

    add_replay_parser(sub)
    return parser


def _reset_target(value: str):
    from consumer.offsets_admin import parse_reset_target

    return parse_reset_target(value)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "replay":
        from consumer.replay import check_args

        check_args(args)  # exits 2 like argparse
    if args.command == "schema":
        import orjson

        from handlers.events import event_json_schema

        sys.stdout.write(orjson.dumps(event_json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n")
        return 0
    if args.command == "asyncapi":
        from consumer.asyncapi import render_asyncapi

        document = render_asyncapi()
        if args.output:
            Path(args.output).write_text(document, encoding="utf-8")
        else:
            sys.stdout.write(document)
        return 0
    try:
        if args.command == "publish":  # a producer's machine: Kafka settings only, no DATABASE_URL needed
            from consumer.publisher import load_publisher_settings

            settings = load_publisher_settings()
        else:
            settings = load_settings()
    except SettingsError as exc:
        print(f"event-consumer: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format)
    log = structlog.get_logger("consumer.cli")
    for warning in settings.warnings():
        log.warning(warning)
    try:
        return _dispatch(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError

        from consumer.process import StartupError

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
        try:
            fh = Path(args.file).open("rb")
        except OSError as exc:
            print(f"event-consumer publish: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_CONFIG
        with fh:
            return asyncio.run(publish_file(settings, args.topic, fh))
    if args.command == "offsets":
        from consumer.offsets_admin import main as offsets_main

        return offsets_main(args, settings)
    if args.command == "check":
        from consumer.check import check

        return asyncio.run(check(settings, sys.stdout))
    if args.command == "replay":
        from consumer.replay import command as replay_command

        return replay_command(args, settings)
    raise AssertionError(args.command)  # argparse rejects anything else
