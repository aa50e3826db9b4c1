"""The one entry point: ``plantwatch <command>``.

Heavy imports (torch, the models) happen inside the command that needs them, so
``plantwatch broker`` and ``plantwatch --help`` start instantly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from stream.config import ConfigError, Settings, load_settings

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
(PLANTWATCH_KAFKA__BOOTSTRAP_SERVERS, PLANTWATCH_METRICS__PORT, ...), then flags.
Kafka client properties pass through: PLANTWATCH_KAFKA_PROP_SECURITY_PROTOCOL=SASL_SSL.
"""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="settings file (.toml or .yaml)")
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (over the config and PLANTWATCH_KAFKA__BOOTSTRAP_SERVERS)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from ``--config``, the environment and ``--bootstrap-servers``."""
    overrides: dict[str, dict[str, object]] = {}
    if getattr(args, "bootstrap_servers", None):
        overrides["kafka"] = {"bootstrap_servers": args.bootstrap_servers}
    return load_settings(getattr(args, "config", None), overrides=overrides)


def _broker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from stream import broker

    p = sub.add_parser(
        "broker",
        help="start/stop a local single-node Kafka (KRaft) without Docker",
        description=(broker.__doc__ or "").strip().splitlines()[0] if broker.__doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    broker.add_arguments(p)
    p.set_defaults(handler=lambda a: broker.run(a))


def _simulate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from stream import simulator

    p = sub.add_parser(
        "simulate",
        help="produce realistic plant data with labelled faults, to Kafka or a file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(p)
    simulator.add_arguments(p)
    p.set_defaults(handler=lambda a: simulator.run(a, settings_from_args(a)))


def _train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from stream import commands

    p = sub.add_parser(
        "train",
        help="fit a scorer on normal history (CSV/Parquet) and write a model artifact",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands.add_train_arguments(p)
    p.set_defaults(handler=commands.train)


def _run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from stream import commands

    p = sub.add_parser(
        "run",
        help="the monitor: consume, score, alert, export metrics",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(p)
    commands.add_run_arguments(p)
    p.set_defaults(handler=lambda a: commands.run(a, settings_from_args(a)))


def _backtest(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from stream import commands

    p = sub.add_parser(
        "backtest",
        help="replay a file through the streaming logic; scores, metrics and a plot",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(p)
    commands.add_backtest_arguments(p)
    p.set_defaults(handler=lambda a: commands.backtest(a, settings_from_args(a)))


def _demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from stream import demo

    p = sub.add_parser(
        "demo",
        help="everything wired together on one machine: broker, simulator, training, monitor",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(p)
    demo.add_arguments(p)
    p.set_defaults(handler=lambda a: demo.run(a, settings_from_args(a)))


COMMANDS: Sequence[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = (
    _broker,
    _simulate,
    _train,
    _run,
    _backtest,
    _demo,
)


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
    for add in COMMANDS:
        add(sub)
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
    except KeyboardInterrupt:
        print("plantwatch: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, PermissionError) as exc:
        print(f"plantwatch: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
