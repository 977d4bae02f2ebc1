"""`seqserve translate` against the real server on the tiny model: text, n-best, streaming, the PNG."""

from __future__ import annotations

import builtins

import pytest

from service.client.cli import main

TEXT = "In the beginning, God created the heavens and the earth."


def seqserve(server, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--target", server.target, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_translate_prints_the_translation_score_and_model(translation_server, capsys) -> None:
    code, out, err = seqserve(translation_server, capsys, "translate", TEXT, "--beam", "3", "--n-best", "2",
                              "--max-output-tokens", "6")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"[1] {TEXT}"
    assert lines[1].lstrip().startswith("-> ") and "(score -" in lines[1]
    assert lines[2].lstrip().startswith("2. ")
    assert lines[-1] == "model transformer version 1"


def test_stream_prints_the_greedy_translation(translation_server, capsys) -> None:
    _, greedy, _ = seqserve(translation_server, capsys, "translate", TEXT, "--beam", "1", "--max-output-tokens", "6")
    code, out, _ = seqserve(translation_server, capsys, "translate", TEXT, "--stream", "--max-output-tokens", "6")
    assert code == 0
    assert greedy.splitlines()[1].strip().startswith(f"-> {out.strip()}")


def test_alignment_png_is_written(translation_server, capsys, tmp_path) -> None:
    path = tmp_path / "alignment.png"
    code, _, err = seqserve(translation_server, capsys, "translate", TEXT, "--max-output-tokens", "5",
                            "--alignment-png", str(path))
    assert code == 0 and f"alignment written to {path}" in err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_matplotlib_is_a_clear_error(translation_server, capsys, tmp_path, monkeypatch) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code, _, err = seqserve(translation_server, capsys, "translate", TEXT, "--alignment-png",
                            str(tmp_path / "a.png"))
    assert code == 2
    assert err.strip() == "error: --alignment-png needs matplotlib: pip install 'seqserve[client]'"


def test_bad_options_exit_2_with_the_servers_message(translation_server, capsys) -> None:
    code, out, err = seqserve(translation_server, capsys, "translate", TEXT, "--beam", "40")
    assert (code, out) == (2, "")
    assert err.strip() == "error: INVALID_ARGUMENT: options.beam_size: 40 exceeds the limit of 16"
