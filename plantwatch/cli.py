"""The one entry point: ``plantwatch <command>``.

Heavy imports (torch, the models) happen inside the command that needs them, so
``plantwatch broker`` and ``plantwatch --help`` start instantly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from plantwatch.settings import ConfigError, Settings, load_settings
from stream.connect import KafkaConnectError

log = logging.getLogger("plantwatch")

EPILOG = """\
a first session, on one machine:
  plantwatch broker start --background          # a real Kafka on 127.0.0.1:9092
  plantwatch simulate --assets 4 --duration 7200 --faults 0 --out history.parquet
  plantwatch train --input history.parquet --model models/pump
  plantwatch run --model models/pump &           # metrics on http://127.0.0.1:9108/metrics
  plantwatch simulate --assets 4 --rate 40 --duration 300 --faults 3
  plantwatch backtest --input data.csv --train-rows 400 --labels anomaly --out scores.csv
or all of it at once: plantwatch demo

configuration: --config FILE (TOML/YAML), then PLANTWATCH_* variables
(PLANTWATCH_KAFKA__BOOTSTRAP_SERVERS, PLANTWATCH_METRICS__PORT, ...), then
--set section.key=value (any setting, e.g. --set threshold.q=1e-5), then flags.
Kafka client properties pass through: PLANTWATCH_KAFKA_PROP_SECURITY_PROTOCOL=SASL_SSL.
Every setting with its default: deploy/plantwatch.toml.
"""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="settings file (.toml or .yaml)")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="one setting over the file and the environment, e.g. --set alert.k=2 (repeatable)",
    )
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (over the config and PLANTWATCH_KAFKA__BOOTSTRAP_SERVERS)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from ``--config``, the environment, ``--set`` and ``--bootstrap-servers``."""
    overrides: dict[str, dict[str, object]] = {}
    if getattr(args, "bootstrap_servers", None):
        overrides["kafka"] = {"bootstrap_servers": args.bootstrap_servers}
    return load_settings(
        getattr(args, "config", None), overrides=overrides, sets=getattr(args, "sets", ())
    )


@dataclass(frozen=True)
class Command:
    """One sub-command: where its arguments and handler live, and whether it reads settings.

    ``module`` is imported only when the parser is built, and names modules that import
    nothing heavy at load time; torch and the models load inside the handlers.
    """

    name: str
    help: str
    module: str
    add_arguments: str
    handler: str
    uses_settings: bool = True


COMMANDS = (
    Command(
        "broker",
        "start/stop a local single-node Kafka (KRaft) without Docker",
        "stream.broker",
        "add_arguments",
        "run",
        uses_settings=False,
    ),
    Command(
        "simulate",
        "produce realistic plant data with labelled faults, to Kafka or a file",
        "plantwatch.simulate",
        "add_arguments",
        "run",
    ),
    Command(
        "train",
        "fit a scorer on normal history (CSV/Parquet) and write a model artifact",
        "plantwatch.commands",
        "add_train_arguments",
        "train",
    ),
    Command(
        "run",
        "the monitor: consume, score, alert, export metrics",
        "plantwatch.commands",
        "add_run_arguments",
        "run",
    ),
    Command(
        "backtest",
        "replay a file through the streaming logic; scores, metrics and a plot",
        "plantwatch.commands",
        "add_backtest_arguments",
        "backtest",
    ),
    Command(
        "demo",
        "everything wired together on one machine: broker, simulator, training, monitor",
        "plantwatch.demo",
        "add_arguments",
        "run",
    ),
)


def _add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], command: Command
) -> None:
    module = importlib.import_module(command.module)
    p = sub.add_parser(
        command.name, help=command.help, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if command.uses_settings:
        _add_common(p)
    getattr(module, command.add_arguments)(p)
    handler: Callable[..., int] = getattr(module, command.handler)
    if command.uses_settings:
        p.set_defaults(handler=lambda a: handler(a, settings_from_args(a)))
    else:
        p.set_defaults(handler=handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plantwatch",
        description="Watch a plant's sensor streams on Kafka: score, alert, explain.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        _add_command(sub, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # librdkafka and torch are chatty at INFO; our own loggers say what matters.
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"plantwatch: {exc}", file=sys.stderr)
        return 2
    except KafkaConnectError as exc:
        # Why and what to check, without a traceback; never the client configuration.
        print(f"plantwatch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("plantwatch: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, PermissionError) as exc:
        print(f"plantwatch: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
