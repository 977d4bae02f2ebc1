"""Server settings: command-line flags, each with an environment-variable fallback.

Precedence is flag > environment > default, so a container image can be configured through its
environment and a person at a shell can still override any one value.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

MIB = 1 << 20
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 50051
    metrics_port: int = 9090  # 0: let the OS pick a free port (it is logged)
    model_dir: pathlib.Path = pathlib.Path("exported")
    threads: int = 1  # onnxruntime intra-op threads per session
    max_texts: int = 64
    max_text_chars: int = 2000
    max_message_bytes: int = 4 * MIB
    grace_seconds: float = 10.0
    inference_workers: int = 2  # threads that run pipelines off the event loop
    log_level: str = "INFO"


def _bounded_int(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum of {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{value} is above the maximum of {maximum}")
        return value

    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def _port(text: str) -> int:
    return _bounded_int(0, 65535)(text)


@dataclass(frozen=True)
class _InvalidEnv:
    """Stands in as the default of a flag whose environment variable did not parse.

    It only becomes an error if the flag is not given (a flag overrides its variable), and the error
    names the variable, which is what the operator has to fix.
    """

    message: str

    def __str__(self) -> str:
        return "invalid"


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The parser, with defaults taken from `env` so `--help` shows what will be used."""
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m service", description="seqserve gRPC model server")

    def add(flag: str, env_name: str, parse: Callable[[str], object], default: object, help_text: str,
            ) -> None:
        raw = env.get(env_name)
        if raw is not None:
            try:
                default = parse(raw)
            except argparse.ArgumentTypeError as exc:
                default = _InvalidEnv(f"environment variable {env_name}={raw!r}: {exc}")
        parser.add_argument(flag, type=parse, default=default,
                            help=f"{help_text} (env {env_name}; default %(default)s)")

    add("--host", "SEQSERVE_HOST", str, defaults.host, "address to bind the gRPC and metrics servers")
    add("--port", "SEQSERVE_PORT", _port, defaults.port, "gRPC port")
    add("--metrics-port", "SEQSERVE_METRICS_PORT", _port, defaults.metrics_port,
        "Prometheus metrics HTTP port, 0 picks a free one")
    add("--model-dir", "SEQSERVE_MODEL_DIR", pathlib.Path, defaults.model_dir, "model repository")
    add("--threads", "SEQSERVE_THREADS", _bounded_int(1, 256), defaults.threads,
        "onnxruntime intra-op threads per model session")
    add("--max-texts", "SEQSERVE_MAX_TEXTS", _bounded_int(1), defaults.max_texts, "most texts per call")
    add("--max-text-chars", "SEQSERVE_MAX_TEXT_CHARS", _bounded_int(1), defaults.max_text_chars,
        "most characters per text")
    add("--max-message-bytes", "SEQSERVE_MAX_MESSAGE_BYTES", _bounded_int(1024, 2**31 - 1),
        defaults.max_message_bytes, "largest gRPC message received or sent")
    add("--grace-seconds", "SEQSERVE_GRACE_SECONDS", _non_negative_float, defaults.grace_seconds,
        "on SIGTERM, how long in-flight calls may take to finish")
    add("--inference-workers", "SEQSERVE_INFERENCE_WORKERS", _bounded_int(1, 256), defaults.inference_workers,
        "threads running model pipelines")
    add("--log-level", "SEQSERVE_LOG_LEVEL", _log_level, defaults.log_level, "logging level")
    return parser


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Parse argv (default sys.argv[1:]) over env (default os.environ); exits 2 on an invalid value."""
    parser = build_parser(os.environ if env is None else env)
    args = parser.parse_args(argv)
    env_errors = [value.message for value in vars(args).values() if isinstance(value, _InvalidEnv)]
    if env_errors:
        parser.error("; ".join(env_errors))
    return Settings(**{key.replace("-", "_"): value for key, value in vars(args).items()})


def configure_logging(level: str) -> None:
    # One line per event, key facts in the message; stderr so stdout stays free for tools.
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
