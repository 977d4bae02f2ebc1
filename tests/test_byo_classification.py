"""python -m training.train classification on the user's own file: a label set the project never used
(topics: cooking / sport / weather), CSV and JSONL, bad files refused with their line numbers, and a
trained classifier served by the real server next to the committed sentiment model, answering
Classification.Classify with the user's labels while Sentiment.Analyze keeps answering as before."""

from __future__ import annotations

import csv
import io
import json
import math
import pathlib
import random
import shutil

import grpc
import pytest
from exported_models import SENTIMENT
from seqserve.v1 import classification_pb2, classification_pb2_grpc, sentiment_pb2, sentiment_pb2_grpc

from training.byo.classification import read_examples
from training.byo.common import DataFileError
from training.train import main

USER_LABELS = ["cooking", "sport", "weather"]
TEMPLATES = {
    "sport": ["the {team} scored a late goal", "a tense match for the {team}", "the {team} lifted the cup"],
    "cooking": ["simmer the {food} with garlic", "bake the {food} for twenty minutes", "season the {food} well"],
    "weather": ["heavy rain is expected over {place}", "sunny skies across {place}", "strong winds hit {place}"],
}
FILLERS = {"team": ["striker", "home side", "visitors", "captain"], "food": ["onions", "soup", "bread", "fish"],
           "place": ["the coast", "the north", "the valley", "the city"]}


def topic_rows(count: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for number in range(count):
        label = USER_LABELS[number % len(USER_LABELS)]
        text = rng.choice(TEMPLATES[label]).format(**{k: rng.choice(v) for k, v in FILLERS.items()})
        rows.append({"text": f"{text} ({number})", "topic": label, "source": f"page{number // 4}"})
    return rows


def write_csv(tmp_path: pathlib.Path, rows: list[dict[str, str]], name: str = "topics.csv") -> pathlib.Path:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["text", "topic", "source"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = tmp_path / name
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def write_jsonl(tmp_path: pathlib.Path, rows: list[dict[str, str]], name: str = "topics.jsonl") -> pathlib.Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def refused(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], path: pathlib.Path, *extra: str) -> str:
    """The command's error output for a file it must refuse (exit 2, nothing written)."""
    out = tmp_path / "models"
    assert main(["classification", "--data", str(path), "--name", "topics", "--out", str(out),
                 "--label-column", "topic", "--dry-run", *extra]) == 2
    assert not out.exists()
    return capsys.readouterr().err


@pytest.mark.parametrize("writer", [write_csv, write_jsonl])
def test_a_good_file_is_planned_with_the_users_labels(tmp_path, capsys, writer) -> None:
    path = writer(tmp_path, topic_rows(60))
    assert main(["classification", "--data", str(path), "--name", "topics", "--out", str(tmp_path / "m"),
                 "--label-column", "topic", "--group-column", "source", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["labels"] == USER_LABELS and plan["label_counts"] == {label: 20 for label in USER_LABELS}
    assert plan["train_size"] + plan["dev_size"] + plan["test_size"] == 60 and plan["split_by"] == "source"
    assert plan["model"] == "bigru" and plan["model_config"]["hidden_dim"] == 32  # sized from 60 examples
    assert not (tmp_path / "m").exists()


def test_a_group_stays_in_one_part_of_the_split(tmp_path) -> None:
    from training.byo.classification import split_file

    path = write_csv(tmp_path, topic_rows(120))
    split = split_file(read_examples(path, label_column="topic", group_column="source"), path, by_group=True)
    owner = {e.group: name for name, part in split.parts().items() for e in part}
    assert all(owner[e.group] == name for name, part in split.parts().items() for e in part)


def test_bad_csv_rows_are_refused_with_their_lines(tmp_path, capsys) -> None:
    lines = write_csv(tmp_path, topic_rows(30)).read_text().split("\n")
    lines[2] = ",sport,page0"                      # line 3: empty text
    lines[4] = "too,many,fields,here"              # line 5: ragged row
    lines[6] = "   ,cooking,page1"                 # line 7: blank text
    lines[9] = "a text with no topic,,page2"       # line 10: empty label
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines), encoding="utf-8")
    err = refused(tmp_path, capsys, path)
    assert f"{path}:3: empty text" in err and f"{path}:7: empty text" in err
    assert f"{path}:5: 4 fields, the header has 3" in err and f"{path}:10: empty label" in err


def test_a_missing_column_names_the_header_line(tmp_path, capsys) -> None:
    path = write_csv(tmp_path, topic_rows(30))
    err = refused(tmp_path, capsys, path, "--text-column", "body")
    assert f"{path}:1: no column 'body' in the header ['text', 'topic', 'source']" in err


def test_rare_labels_and_a_single_label_are_refused(tmp_path, capsys) -> None:
    rows = [*topic_rows(30), {"text": "a rare one", "topic": "finance", "source": "x"}]
    err = refused(tmp_path, capsys, write_csv(tmp_path, rows))
    assert ":32: label 'finance' has 1 example(s) (lines 32); at least 5 are needed" in err
    only_sport = [r for r in topic_rows(60) if r["topic"] == "sport"]
    err = refused(tmp_path, capsys, write_csv(tmp_path, only_sport, "one.csv"))
    assert "only 1 label ('sport'); a classifier needs at least 2" in err


def test_bad_jsonl_lines_are_refused_with_their_lines(tmp_path, capsys) -> None:
    lines = write_jsonl(tmp_path, topic_rows(30)).read_text().split("\n")
    lines[1] = '{"text": "unclosed", "topic": "sport"'      # line 2: not JSON
    lines[3] = '["a list", "sport"]'                        # line 4: not an object
    lines[5] = '{"text": "no topic here"}'                  # line 6: missing field
    lines[7] = '{"text": "", "topic": "sport"}'             # line 8: empty text
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    err = refused(tmp_path, capsys, path)
    assert f"{path}:2: unparseable JSON" in err and f"{path}:4: expected a JSON object, found list" in err
    assert f"{path}:6: no 'topic' field" in err and f"{path}:8: empty text" in err


def test_an_unparseable_csv_quote_is_refused_with_its_line(tmp_path) -> None:
    path = tmp_path / "quote.csv"
    path.write_text('text,label\n"ok",sport\n"broken "quote" here,sport\n', encoding="utf-8")
    with pytest.raises(DataFileError) as error:
        read_examples(path, min_per_label=1)
    assert any(p.line == 3 for p in error.value.problems), error.value.problems


def train(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, path: pathlib.Path, out: pathlib.Path,
          *extra: str) -> dict:
    monkeypatch.setenv("SEQSERVE_CHECKPOINTS", str(tmp_path / "checkpoints"))
    assert main(["classification", "--data", str(path), "--name", "topics", "--out", str(out), "--threads", "1",
                 "--label-column", "topic", *extra]) == 0
    manifest = json.loads((out / "topics" / "1" / "manifest.json").read_text())
    assert manifest["task"] == "classification" and manifest["labels"] == USER_LABELS
    assert json.loads((out / "topics" / "1" / "labels.json").read_text()) == USER_LABELS
    return manifest


def assert_classified(result: classification_pb2.ClassifyResult, text: str, labels: list[str]) -> None:
    assert [p.label for p in result.probabilities] == labels and result.label in labels
    assert math.isclose(sum(p.probability for p in result.probabilities), 1.0, abs_tol=1e-4)
    assert result.tokens and math.isclose(sum(t.weight for t in result.tokens), 1.0, abs_tol=1e-4)
    assert all(0 <= t.start <= t.end <= len(text) for t in result.tokens)


@pytest.mark.slow
def test_a_trained_bigru_is_served_next_to_the_committed_sentiment_model(
        tmp_path, monkeypatch, start_server) -> None:
    out = tmp_path / "models"
    shutil.copytree(SENTIMENT, out / "sentiment-bigru" / SENTIMENT.name)
    manifest = train(tmp_path, monkeypatch, write_jsonl(tmp_path, topic_rows(150, seed=1)), out, "--max-epochs", "2")
    assert manifest["metrics"]["majority_baseline"]["n"] == manifest["data"]["sizes"]["test"]
    assert manifest["classification"] == {"add_special_tokens": False, "architecture": "bigru"}

    server = start_server(model_dir=out)
    texts = ["bake the bread for twenty minutes", "strong winds hit the coast tonight"]
    with grpc.insecure_channel(server.target) as channel:
        classify = classification_pb2_grpc.ClassificationStub(channel)
        response = classify.Classify(classification_pb2.ClassifyRequest(texts=texts), timeout=30)
        assert response.model.name == "topics" and response.model.version == "1"
        for text, result in zip(texts, response.results, strict=True):
            assert_classified(result, text, USER_LABELS)
        # The sentiment model answers Classify when named, and Sentiment.Analyze as before.
        named = classify.Classify(classification_pb2.ClassifyRequest(texts=texts, model="sentiment-bigru"),
                                  timeout=30)
        assert_classified(named.results[0], texts[0], ["negative", "neutral", "positive"])
        analyzed = sentiment_pb2_grpc.SentimentStub(channel).Analyze(
            sentiment_pb2.AnalyzeSentimentRequest(texts=texts), timeout=30)
        assert analyzed.model.name == "sentiment-bigru"
        assert [r.SerializeToString() for r in analyzed.results] == [r.SerializeToString() for r in named.results]
        with pytest.raises(grpc.RpcError) as error:
            sentiment_pb2_grpc.SentimentStub(channel).Analyze(
                sentiment_pb2.AnalyzeSentimentRequest(texts=texts, model="topics"), timeout=30)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.slow
def test_emoji_names_ship_a_table_the_served_pipeline_reads(tmp_path, monkeypatch) -> None:
    from service.pipelines.classification import ClassificationPipeline
    from service.runtime.version_loader import load_version

    symbols = {"cooking": "🍳", "sport": "⚽", "weather": "🌧️"}
    rows = [{**row, "text": f"{row['text']} {symbols[row['topic']]}"} for row in topic_rows(150, seed=2)]
    out = tmp_path / "models"
    manifest = train(tmp_path, monkeypatch, write_csv(tmp_path, rows), out, "--max-epochs", "1", "--emoji-names")
    assert manifest["classification"]["replacements"] == "text_replacements.json"
    assert "text_replacements.json" in manifest["files"]
    text = "what a match ⚽"
    (result,) = ClassificationPipeline(load_version(out / "topics" / "1"))([text])
    ball = [t for t in result.tokens if (t.start, t.end) == (13, 14)]  # the emoji's subwords point at it
    assert ball and all(t.token != "[UNK]" for t in result.tokens)
    assert "".join(t.token for t in ball).replace("Ġ", "").lower() in ("soccerball", "soccer ball")
