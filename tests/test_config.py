"""Server settings: flags beat environment variables, which beat defaults; bad values stop argparse."""

from __future__ import annotations

import dataclasses
import pathlib
import re
import typing

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


# A value other than the default for the settings whose type does not give one (values a parser checks).
SAMPLE_VALUES: dict[str, tuple[str, object]] = {
    "host": ("127.0.0.1", "127.0.0.1"),
    "log_level": ("debug", "DEBUG"),
    "log_format": ("json", "json"),
    "queue_delay_policy": ("fixed", "fixed"),
    "decode_scheduling": ("batch", "batch"),
    "min_translation_confidence": ("0.25", 0.25),  # a confidence: at most 1
}


def sample_value(field: dataclasses.Field) -> tuple[str, object]:
    """(as typed on the command line, as parsed): a valid value that is not the setting's default."""
    if field.name in SAMPLE_VALUES:
        return SAMPLE_VALUES[field.name]
    kind, default = SETTING_TYPES[field.name], field.default
    if kind is int:
        return str(default + 1), default + 1
    if kind is float:
        return str(default + 2.5), default + 2.5
    if pathlib.Path in typing.get_args(kind) or kind is pathlib.Path:
        return "/models/elsewhere", pathlib.Path("/models/elsewhere")
    raise AssertionError(f"setting {field.name} ({kind}): add a sample value to SAMPLE_VALUES")


SETTING_TYPES = typing.get_type_hints(Settings)
# Settings valid only beside others (TLS: a certificate needs its key, a client CA needs both).
TLS_FILES = {"tls_cert": "/tls/server.pem", "tls_key": "/tls/server.key"}
COMPANIONS = {name: TLS_FILES for name in ("tls_cert", "tls_key", "tls_client_ca")}


def flag_and_variable(field: dataclasses.Field) -> tuple[str, str]:
    return flag_and_variable_of(field.name)


def flag_and_variable_of(name: str) -> tuple[str, str]:
    return "--" + name.replace("_", "-"), "SEQSERVE_" + name.upper()


@pytest.mark.parametrize("field", dataclasses.fields(Settings), ids=lambda field: field.name)
def test_every_setting_comes_from_its_flag_or_its_environment_variable(field: dataclasses.Field) -> None:
    # Derived from the dataclass, so a new setting is covered (or fails here asking for a sample value).
    flag, variable = flag_and_variable(field)
    value, expected = sample_value(field)
    assert expected != field.default
    companions = {name: text for name, text in COMPANIONS.get(field.name, {}).items() if name != field.name}
    flags = [word for name, text in companions.items() for word in (flag_and_variable_of(name)[0], text)]
    variables = {flag_and_variable_of(name)[1]: text for name, text in companions.items()}
    assert getattr(parse_settings([*flags, flag, value], env={}), field.name) == expected
    assert getattr(parse_settings([], env={**variables, variable: value}), field.name) == expected


NUMERIC_SETTINGS = [field for field in dataclasses.fields(Settings) if SETTING_TYPES[field.name] in (int, float)]


@pytest.mark.parametrize("field", NUMERIC_SETTINGS, ids=lambda field: field.name)
def test_every_numeric_setting_refuses_a_word_naming_its_flag_and_its_variable(
    field: dataclasses.Field, capsys: pytest.CaptureFixture[str]
) -> None:
    flag, variable = flag_and_variable(field)
    for argv, env, named in (([flag, "lots"], {}, f"argument {flag}:"), ([], {variable: "lots"}, variable)):
        with pytest.raises(SystemExit) as exit_info:
            parse_settings(argv, env=env)
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert named in error and "'lots' is not" in error, error


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
