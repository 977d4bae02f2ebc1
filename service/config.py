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
from dataclasses import dataclass, fields

from service.model.model_config import DECODE_SCHEDULINGS, QUEUE_DELAY_POLICIES, BatchConfig

MIB = 1 << 20
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
_BATCH = BatchConfig()


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 50051
    metrics_port: int = 9090  # 0: let the OS pick a free port (it is logged)
    model_dir: pathlib.Path = pathlib.Path("exported")
    threads: int = 0  # onnxruntime threads shared by all models; 0: from CPU affinity and cgroup quota
    max_texts: int = 64
    max_text_chars: int = 2000
    max_message_bytes: int = 4 * MIB
    grace_seconds: float = 10.0
    inference_workers: int = 2  # threads that run pipelines off the event loop
    # Server processes sharing the port (SO_REUSEPORT) and the thread budget; 0: one per CPU of the budget.
    # 1 by default: every worker loads every model (docs/serving.md, "Worker processes").
    workers: int = 1
    log_level: str = "INFO"
    log_format: str = "text"  # "json": one JSON object per line, with the request id
    model_config: pathlib.Path | None = None  # JSON: per-model version pins and batching
    poll_seconds: float = 0.0  # repository polling interval; 0 = off
    # The server-wide batching defaults: BatchConfig's fields (service/model/model_config.py documents them),
    # with its defaults; a model config file can override each per model.
    max_batch_size: int = _BATCH.max_batch_size
    max_queue_delay_ms: float = _BATCH.max_queue_delay_ms
    queue_delay_policy: str = _BATCH.queue_delay_policy
    max_queue_texts: int = _BATCH.max_queue_texts
    batch_token_budget: int = _BATCH.batch_token_budget
    items_per_run: int = _BATCH.items_per_run  # 0: each model's manifest decides (1 for dynamic int8)
    inline_max_ms: float = _BATCH.inline_max_ms  # a lone short call runs in the event loop; 0: never
    decode_scheduling: str = _BATCH.decode_scheduling  # translation: "iteration" (step-interleaved) or "batch"
    # Translate: texts x beam size x output tokens per call (64 texts x the default beam 4 x 256 tokens)
    max_translate_cost: int = 65536
    # Translate/TranslateStream: results whose confidence is below this are flagged low_confidence (still
    # returned); 0 = off. docs/translation.md "Confidence" says why flagging rather than refusing.
    min_translation_confidence: float = 0.0
    # V2 ModelInfer: rows x named dimensions of one input (64 rows of 256 positions, the longest text a
    # committed model reads); at 128,000 one call peaked the server at 0.8-2.5 GiB (docs/reliability.md)
    max_v2_positions: int = 16384
    drain_seconds: float = 0.0  # on SIGTERM: NOT_SERVING but still answering for this long
    max_connection_age_seconds: float = 0.0  # 0 = unlimited
    tls_cert: pathlib.Path | None = None
    tls_key: pathlib.Path | None = None
    tls_client_ca: pathlib.Path | None = None  # set: clients must present a certificate it signed
    admin_token_file: pathlib.Path | None = None
    api_token_file: pathlib.Path | None = None  # set: every call but health needs a token

    def batch_config(self) -> BatchConfig:
        """The server-wide batch settings: every BatchConfig field from the setting of the same name."""
        return BatchConfig(**{f.name: getattr(self, f.name) for f in fields(BatchConfig)})


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


def _unit_float(text: str) -> float:
    value = _non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{value} is above 1")
    return value


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def _optional_path(text: str) -> pathlib.Path | None:
    return pathlib.Path(text) if text else None


def _log_format(text: str) -> str:
    if text not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_FORMATS)}")
    return text


def _queue_delay_policy(text: str) -> str:
    if text not in QUEUE_DELAY_POLICIES:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(QUEUE_DELAY_POLICIES)}")
    return text


def _decode_scheduling(text: str) -> str:
    if text not in DECODE_SCHEDULINGS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(DECODE_SCHEDULINGS)}")
    return text


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
    add("--threads", "SEQSERVE_THREADS", _bounded_int(0, 256), defaults.threads,
        "onnxruntime threads shared by all models; 0 sizes them from CPU affinity and cgroup quota")
    add("--max-texts", "SEQSERVE_MAX_TEXTS", _bounded_int(1), defaults.max_texts, "most texts per call")
    add("--max-text-chars", "SEQSERVE_MAX_TEXT_CHARS", _bounded_int(1), defaults.max_text_chars,
        "most characters per text")
    add("--max-message-bytes", "SEQSERVE_MAX_MESSAGE_BYTES", _bounded_int(1024, 2**31 - 1),
        defaults.max_message_bytes, "largest gRPC message received or sent")
    add("--grace-seconds", "SEQSERVE_GRACE_SECONDS", _non_negative_float, defaults.grace_seconds,
        "on SIGTERM, how long in-flight calls may take to finish")
    add("--inference-workers", "SEQSERVE_INFERENCE_WORKERS", _bounded_int(1, 256), defaults.inference_workers,
        "threads running model pipelines")
    add("--workers", "SEQSERVE_WORKERS", _bounded_int(0, 64), defaults.workers,
        "server processes sharing the gRPC port and the CPU budget, each loading every model; "
        "0: one per CPU of the budget")
    add("--log-level", "SEQSERVE_LOG_LEVEL", _log_level, defaults.log_level, "logging level")
    add("--log-format", "SEQSERVE_LOG_FORMAT", _log_format, defaults.log_format, "text or json")
    add("--model-config", "SEQSERVE_MODEL_CONFIG", _optional_path, defaults.model_config,
        "JSON file of per-model settings (version pin, batching)")
    add("--poll-seconds", "SEQSERVE_POLL_SECONDS", _non_negative_float, defaults.poll_seconds,
        "how often to look for new model versions; 0 turns polling off")
    add("--max-batch-size", "SEQSERVE_MAX_BATCH_SIZE", _bounded_int(1, 4096), defaults.max_batch_size,
        "most texts per batch")
    add("--max-queue-delay-ms", "SEQSERVE_MAX_QUEUE_DELAY_MS", _non_negative_float, defaults.max_queue_delay_ms,
        "longest a call waits for others to batch with")
    add("--queue-delay-policy", "SEQSERVE_QUEUE_DELAY_POLICY", _queue_delay_policy, defaults.queue_delay_policy,
        "adaptive: wait only for as many texts as the last batch held (a lone client never waits); "
        "fixed: always wait up to --max-queue-delay-ms")
    add("--max-queue-texts", "SEQSERVE_MAX_QUEUE_TEXTS", _bounded_int(1), defaults.max_queue_texts,
        "texts queued per model before calls get RESOURCE_EXHAUSTED")
    add("--batch-token-budget", "SEQSERVE_BATCH_TOKEN_BUDGET", _bounded_int(1), defaults.batch_token_budget,
        "most texts x padded length in one batch")
    add("--items-per-run", "SEQSERVE_ITEMS_PER_RUN", _bounded_int(0), defaults.items_per_run,
        "most items per onnxruntime run; 0: each model's manifest decides (1 for a dynamically quantized "
        "graph, so batch-mates never change an answer; else no limit)")
    add("--inline-max-ms", "SEQSERVE_INLINE_MAX_MS", _non_negative_float, defaults.inline_max_ms,
        "a lone call whose model run is predicted at no more than this runs in the event loop, without the "
        "hand-off to an inference thread and back; 0: always in a thread")
    add("--decode-scheduling", "SEQSERVE_DECODE_SCHEDULING", _decode_scheduling, defaults.decode_scheduling,
        "translation: iteration (batches decode a step at a time, interleaved; each call answered when its own "
        "texts are done) or batch (one batch to its end, light calls between its chunks)")
    add("--max-translate-cost", "SEQSERVE_MAX_TRANSLATE_COST", _bounded_int(1), defaults.max_translate_cost,
        "most decoder work one Translate call may ask for, texts x beam size x output tokens (each text's "
        "max_output_tokens, or its default from the source length); above it the call gets RESOURCE_EXHAUSTED")
    add("--min-translation-confidence", "SEQSERVE_MIN_TRANSLATION_CONFIDENCE", _unit_float,
        defaults.min_translation_confidence,
        "flag translations whose confidence (in [0, 1]) is below this with low_confidence; 0 turns it off")
    add("--max-v2-positions", "SEQSERVE_MAX_V2_POSITIONS", _bounded_int(1), defaults.max_v2_positions,
        "most positions (rows x named dimensions) of one V2 ModelInfer input; above it INVALID_ARGUMENT")
    add("--drain-seconds", "SEQSERVE_DRAIN_SECONDS", _non_negative_float, defaults.drain_seconds,
        "on SIGTERM, keep answering this long while health says NOT_SERVING")
    add("--max-connection-age-seconds", "SEQSERVE_MAX_CONNECTION_AGE_SECONDS", _non_negative_float,
        defaults.max_connection_age_seconds, "close connections this old so clients rebalance; 0 = never")
    add("--tls-cert", "SEQSERVE_TLS_CERT", _optional_path, defaults.tls_cert, "server certificate (PEM)")
    add("--tls-key", "SEQSERVE_TLS_KEY", _optional_path, defaults.tls_key, "server private key (PEM)")
    add("--tls-client-ca", "SEQSERVE_TLS_CLIENT_CA", _optional_path, defaults.tls_client_ca,
        "CA bundle (PEM); set, clients must present a certificate it signed (mutual TLS)")
    add("--admin-token-file", "SEQSERVE_ADMIN_TOKEN_FILE", _optional_path, defaults.admin_token_file,
        "file holding the bearer token for Admin calls")
    add("--api-token-file", "SEQSERVE_API_TOKEN_FILE", _optional_path, defaults.api_token_file,
        "file holding the bearer token every call needs (health excepted)")
    return parser


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Parse argv (default sys.argv[1:]) over env (default os.environ); exits 2 on an invalid value."""
    parser = build_parser(os.environ if env is None else env)
    args = parser.parse_args(argv)
    env_errors = [value.message for value in vars(args).values() if isinstance(value, _InvalidEnv)]
    if env_errors:
        parser.error("; ".join(env_errors))
    settings = Settings(**{key.replace("-", "_"): value for key, value in vars(args).items()})
    # Half a TLS setup would silently serve plaintext or refuse every client; stop at start instead.
    if (settings.tls_cert is None) != (settings.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if settings.tls_client_ca is not None and settings.tls_cert is None:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    return settings


def configure_logging(level: str, log_format: str = "text") -> None:
    # One line per event, key facts in the message; stderr so stdout stays free for tools. JSON lines
    # carry the request id of the call being handled, so a log store can join them to client reports.
    from service.observability.json_logs import JsonFormatter, RequestIdFilter

    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler], force=True)
