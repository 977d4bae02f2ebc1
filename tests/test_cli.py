"""The `seqserve` command against the real server: readable output, JSON, and errors as exit 2."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from exported_models import DEFAULT_SENTIMENT, SENTIMENT
from grpc_health.v1 import health_pb2

from service.client.cli import main
from service.client.client import SeqserveClient


def seqserve(server, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--target", server.target, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sentiment_prints_label_probabilities_and_top_tokens_per_text(server, capsys) -> None:
    code, out, err = seqserve(server, capsys, "sentiment", "I love this, it is wonderful!", "Awful service.")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "[1] I love this, it is wonderful!"
    assert lines[1].split()[0] in {"negative", "neutral", "positive"}
    assert "negative 0." in lines[1] and "neutral 0." in lines[1] and "positive 0." in lines[1]
    assert lines[2].lstrip().startswith("attention")
    assert lines[3] == "[2] Awful service."
    assert lines[-1] == f"model {DEFAULT_SENTIMENT.parent.name} version {DEFAULT_SENTIMENT.name}"


def test_sentiment_no_tokens_prints_label_and_probabilities_only(server, capsys) -> None:
    code, out, err = seqserve(server, capsys, "sentiment", "--no-tokens", "I love this, it is wonderful!", "Awful.")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert [line[:3] for line in lines[:-1:2]] == ["[1]", "[2]"] and "attention" not in out
    assert lines[1].split()[0] in {"negative", "neutral", "positive"}
    code, out, _ = seqserve(server, capsys, "--json", "sentiment", "--no-tokens", "Great!")
    assert code == 0 and json.loads(out)["results"][0]["tokens"] == []


def test_sentiment_json_is_the_response_message(server, capsys) -> None:
    code, out, _ = seqserve(server, capsys, "--json", "sentiment", "Great!", "Bad.")
    assert code == 0
    response = json.loads(out)
    assert [len(r["probabilities"]) for r in response["results"]] == [3, 3]
    assert set(response["results"][0]["tokens"][0]) == {"token", "weight", "start", "end"}
    assert response["model"] == {"name": DEFAULT_SENTIMENT.parent.name, "version": DEFAULT_SENTIMENT.name}


def test_bad_input_prints_the_grpc_error_and_exits_2(server, capsys) -> None:
    code, out, err = seqserve(server, capsys, "sentiment", "fine", "   ")
    assert (code, out) == (2, "")
    assert err.strip() == "error: INVALID_ARGUMENT: texts[1]: is empty"


def test_an_unknown_model_exits_2_with_not_found(server, capsys) -> None:
    code, _, err = seqserve(server, capsys, "sentiment", "--model", "nope", "fine")
    assert code == 2 and err.startswith("error: NOT_FOUND: model 'nope'")


def test_models_lists_the_loaded_models(server, capsys) -> None:
    code, out, _ = seqserve(server, capsys, "models")
    assert code == 0
    lines = out.splitlines()
    assert f"{DEFAULT_SENTIMENT.parent.name}  version {DEFAULT_SENTIMENT.name}  task sentiment  (default)" in lines
    assert any(line.startswith(f"sentiment-bigru  version {SENTIMENT.name}  task sentiment") for line in lines)
    code, out, _ = seqserve(server, capsys, "--json", "models")
    assert "sentiment-bigru" in [m["name"] for m in json.loads(out)["models"]]


def test_health_prints_serving(server, capsys) -> None:
    assert seqserve(server, capsys, "health") == (0, "SERVING\n", "")
    assert seqserve(server, capsys, "health", "--service", "seqserve.v1.Sentiment") == (0, "SERVING\n", "")
    code, _, err = seqserve(server, capsys, "health", "--service", "nope")
    assert code == 2 and err.startswith("error: NOT_FOUND")


def test_an_unreachable_server_exits_2_with_unavailable(capsys) -> None:
    code = main(["--target", "127.0.0.1:1", "--timeout", "5", "health"])
    assert code == 2 and capsys.readouterr().err.startswith("error: UNAVAILABLE: ")


def test_the_console_script_reads_its_target_from_the_environment(server) -> None:
    executable = shutil.which("seqserve", path=str(pathlib.Path(sys.executable).parent))
    assert executable, "the seqserve console script is not installed (pip install -e .)"
    env = {**os.environ, "SEQSERVE_TARGET": server.target}
    done = subprocess.run([executable, "sentiment", "What a lovely day"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("[1] What a lovely day\n")
    done = subprocess.run([executable, "sentiment", ""], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert (done.returncode, done.stderr) == (2, "error: INVALID_ARGUMENT: texts[0]: is empty\n")


def test_a_reader_that_closes_the_pipe_early_stops_the_command_quietly(server) -> None:
    # `seqserve recommend ... | head -1`: the reader is gone before the output is written.
    executable = shutil.which("seqserve", path=str(pathlib.Path(sys.executable).parent))
    assert executable
    env = {**os.environ, "SEQSERVE_TARGET": server.target}
    with subprocess.Popen([executable, "models"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert code == 141


def test_the_python_client_returns_messages(server) -> None:
    with SeqserveClient(server.target, timeout=10) as client:
        assert len(client.sentiment(["one", "two"]).results) == 2
        assert "sentiment-bigru" in [m.name for m in client.list_models(task="sentiment").models]
        assert client.get_model("sentiment-bigru").task == "sentiment"
        assert client.health().status == health_pb2.HealthCheckResponse.SERVING


def test_recommendation_scores_line_up_whatever_the_title_and_genre_lengths() -> None:
    import io

    from seqserve.v1 import models_pb2, recommendation_pb2

    from service.client.recommend_output import print_recommendations

    def recommended(item_id: int, name: str, genres: list[str], score: float) -> recommendation_pb2.RecommendedItem:
        return recommendation_pb2.RecommendedItem(
            item=recommendation_pb2.Item(id=item_id, name=name, genres=genres), score=score)

    response = recommendation_pb2.RecommendResponse(
        items=[recommended(3156, "Star Wars: Episode VI - Return of the Jedi (1983)",
                           ["Action", "Adventure", "Romance", "Sci-Fi", "War"], 2.366),
               recommended(259, "Back to the Future (1985)", ["Comedy", "Sci-Fi"], 2.08)],
        model=models_pb2.ModelRef(name="sasrec-ml1m", version="3"))
    out = io.StringIO()
    print_recommendations(response, 1, out)
    rows = [line for line in out.getvalue().splitlines() if " score " in line]
    assert len(rows) == 2 and len({row.index(" score ") for row in rows}) == 1
    assert rows[0].startswith("    1. Star Wars") and rows[1].endswith("score 2.080  #259")
