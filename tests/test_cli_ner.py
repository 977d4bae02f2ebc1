"""`seqserve ner` against the real server: readable entities with offsets, tokens on request, JSON,
errors as exit 2."""

from __future__ import annotations

import json

from service.client.cli import main
from service.client.client import SeqserveClient


def seqserve(server, capsys, *args: str) -> tuple[int, str, str]:
    code = main(["--target", server.target, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_ner_prints_each_entity_with_type_offsets_and_confidence(server, capsys) -> None:
    text = "Barack Obama flew to Paris with Michelle Obama"
    code, out, err = seqserve(server, capsys, "ner", "--model", "ner-bilstm-crf", text, "nothing here")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"[1] {text}"
    entity_lines = lines[1 : lines.index("[2] nothing here")]
    with SeqserveClient(server.target) as client:
        entities = client.ner([text], model="ner-bilstm-crf").results[0].entities
    assert entities and len(entity_lines) == len(entities)
    for line, entity in zip(entity_lines, entities, strict=True):
        assert text[entity.start : entity.end] == entity.text
        assert line.split()[0] == entity.type
        assert repr(entity.text) in line and f"chars {entity.start}-{entity.end}" in line
        assert f"confidence {entity.confidence:.2f}" in line
    assert lines[-2] == "    (no entities)"
    assert lines[-1].startswith("model ner-bilstm-crf version ")


def test_ner_tokens_flag_shows_word_tag_pairs(server, capsys) -> None:
    code, out, _ = seqserve(server, capsys, "ner", "--tokens", "I love New York")
    assert code == 0
    (tokens_line,) = [line for line in out.splitlines() if line.lstrip().startswith("tokens")]
    assert [pair.rsplit("/", 1)[0] for pair in tokens_line.split()[1:]] == ["I", "love", "New", "York"]


def test_ner_json_is_the_response_message(server, capsys) -> None:
    code, out, _ = seqserve(server, capsys, "--json", "ner", "Obama visited Berlin")
    assert code == 0
    response = json.loads(out)
    assert set(response) == {"results", "model"}
    for entity in response["results"][0]["entities"]:
        assert "Obama visited Berlin"[entity["start"] : entity["end"]] == entity["text"]


def test_ner_bad_input_exits_2_with_the_grpc_error(server, capsys) -> None:
    code, out, err = seqserve(server, capsys, "ner", "Paris", "  ")
    assert (code, out) == (2, "")
    assert err.strip() == "error: INVALID_ARGUMENT: texts[1]: is empty"
    code, _, err = seqserve(server, capsys, "ner", "--model", "nope", "Paris")
    assert code == 2 and err.startswith("error: NOT_FOUND: model 'nope'")


def test_the_python_client_has_a_ner_method(server) -> None:
    with SeqserveClient(server.target) as client:
        response = client.ner(["Obama in Paris"], include_tokens=True)
    assert [t.token for t in response.results[0].tokens] == ["Obama", "in", "Paris"]
