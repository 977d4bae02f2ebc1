"""Server settings: flags beat environment variables, which beat defaults; bad values stop argparse."""

from __future__ import annotations

import dataclasses
import pathlib
import re

import pytest

from service.config import Settings, build_parser, parse_settings

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_defaults() -> None:
    settings = parse_settings([], env={})
    assert settings == Settings(
        host="0.0.0.0", port=50051, metrics_port=9090, model_dir=pathlib.Path("exported"),
        max_texts=64, max_text_chars=2000, max_message_bytes=4 * 1024 * 1024, grace_seconds=10.0, threads=0,
        inference_workers=2, log_level="INFO",
    )


@pytest.mark.parametrize(
    ("variable", "flag", "value", "field", "expected"),
    [
        ("SEQSERVE_HOST", "--host", "127.0.0.1", "host", "127.0.0.1"),
        ("SEQSERVE_PORT", "--port", "6000", "port", 6000),
        ("SEQSERVE_METRICS_PORT", "--metrics-port", "0", "metrics_port", 0),
        ("SEQSERVE_MODEL_DIR", "--model-dir", "/models", "model_dir", pathlib.Path("/models")),
        ("SEQSERVE_THREADS", "--threads", "2", "threads", 2),
        ("SEQSERVE_MAX_TEXTS", "--max-texts", "8", "max_texts", 8),
        ("SEQSERVE_MAX_TEXT_CHARS", "--max-text-chars", "100", "max_text_chars", 100),
        ("SEQSERVE_MAX_MESSAGE_BYTES", "--max-message-bytes", "65536", "max_message_bytes", 65536),
        ("SEQSERVE_GRACE_SECONDS", "--grace-seconds", "2.5", "grace_seconds", 2.5),
        ("SEQSERVE_INFERENCE_WORKERS", "--inference-workers", "4", "inference_workers", 4),
        ("SEQSERVE_LOG_LEVEL", "--log-level", "debug", "log_level", "DEBUG"),
        ("SEQSERVE_QUEUE_DELAY_POLICY", "--queue-delay-policy", "fixed", "queue_delay_policy", "fixed"),
    ],
)
def test_every_setting_comes_from_its_flag_or_its_environment_variable(
    variable: str, flag: str, value: str, field: str, expected: object
) -> None:
    assert getattr(parse_settings([flag, value], env={}), field) == expected
    assert getattr(parse_settings([], env={variable: value}), field) == expected


def test_a_flag_overrides_its_environment_variable() -> None:
    assert parse_settings(["--port", "7000"], env={"SEQSERVE_PORT": "6000"}).port == 7000


def test_a_flag_overrides_even_an_invalid_environment_variable() -> None:
    assert parse_settings(["--port", "7000"], env={"SEQSERVE_PORT": "http"}).port == 7000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "http"], "argument --port: 'http' is not an integer"),
        (["--port", "70000"], "argument --port: 70000 is above the maximum of 65535"),
        (["--metrics-port", "-1"], "argument --metrics-port: -1 is below the minimum of 0"),
        (["--threads", "-1"], "argument --threads: -1 is below the minimum of 0"),
        (["--max-texts", "0"], "argument --max-texts: 0 is below the minimum of 1"),
        (["--grace-seconds", "-3"], "argument --grace-seconds: -3.0 is negative"),
        (["--grace-seconds", "soon"], "argument --grace-seconds: 'soon' is not a number"),
        (["--inference-workers", "two"], "argument --inference-workers: 'two' is not an integer"),
        (["--log-level", "loud"], "argument --log-level: 'loud' is not one of DEBUG, INFO, WARNING, ERROR"),
        (["--queue-delay-policy", "eager"], "argument --queue-delay-policy: 'eager' is not one of adaptive, fixed"),
        (["--colour", "blue"], "unrecognized arguments: --colour blue"),
    ],
)
def test_an_invalid_flag_is_a_usage_error_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(argv, env={})
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_invalid_environment_variable_is_a_usage_error_naming_the_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings([], env={"SEQSERVE_MAX_TEXTS": "many"})
    assert exit_info.value.code == 2
    assert "environment variable SEQSERVE_MAX_TEXTS='many': 'many' is not an integer" in capsys.readouterr().err


def readme_configuration_rows() -> list[str]:
    """The rows of the README's configuration table (under "## Configuration")."""
    section = README.read_text("utf-8").split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `--")]


def test_the_readme_configuration_table_names_every_setting_with_its_variable() -> None:
    # Derived from the parser itself, so a new setting without its README row fails here.
    options = [action for action in build_parser(env={})._actions if action.dest != "help"]
    assert {action.dest for action in options} == {field.name for field in dataclasses.fields(Settings)}
    rows = readme_configuration_rows()
    for action in options:
        (flag,) = action.option_strings
        (variable,) = re.findall(r"\(env (SEQSERVE_\w+);", action.help or "")
        matching = [row for row in rows if f"`{flag}`" in row]
        assert len(matching) == 1, f"README configuration table: no row (or several) for {flag}"
        assert f"`{variable}`" in matching[0], f"README configuration table: {flag} row does not name {variable}"
        assert readme_default(matching[0]) == as_written(action.default), f"README configuration table: {flag} default"


def as_written(default: object) -> str:
    if default is None:
        return "none"
    return f"{default:g}" if isinstance(default, float) else str(default)


def readme_default(row: str) -> str:
    """The default a README row states: the first word of its last cell ("4 MiB" counted out)."""
    cell = row.strip("| ").rsplit("|", 1)[1].strip()
    first, _, rest = cell.replace("`", "").partition(" ")
    return str(int(first) << 20) if rest.startswith("MiB") else first
