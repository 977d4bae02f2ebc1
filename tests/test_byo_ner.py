"""python -m training.train ner on the user's own CoNLL file: entity types the project never used
(medication notes: drug, dose, symptom), bad files refused with their line numbers, and a trained tagger
served by the real server next to a committed NER model, answering with the user's types."""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import subprocess
import sys

import grpc
import pytest
from exported_models import latest_version_dir
from seqserve.v1 import ner_pb2, ner_pb2_grpc

from training.byo.ner import read_conll, split_file
from training.train import main

REPO = pathlib.Path(__file__).resolve().parents[1]
USER_TYPES = ("dose", "drug", "symptom")
USER_TAGS = ["O", "B-dose", "I-dose", "B-drug", "I-drug", "B-symptom", "I-symptom"]
DRUGS = [["ibuprofen"], ["paracetamol"], ["amoxicillin"], ["insulin", "glargine"], ["vitamin", "D"], ["aspirin"]]
DOSES = [["20", "mg"], ["5", "ml"], ["two", "tablets"], ["400", "mg"], ["10", "units"]]
SYMPTOMS = [["headache"], ["sore", "throat"], ["fever"], ["back", "pain"], ["nausea"]]


def medication_sentences(count: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    """(token, tag) sentences in three patterns, entities drawn from the lists above."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        drug, dose, symptom = rng.choice(DRUGS), rng.choice(DOSES), rng.choice(SYMPTOMS)
        parts = rng.choice([
            [(["she", "took"], ""), (dose, "dose"), (["of"], ""), (drug, "drug"), (["for"], ""), (symptom, "symptom"),
             (["."], "")],
            [(["the"], ""), (symptom, "symptom"), (["eased", "after"], ""), (drug, "drug"), (["."], "")],
            [(["give"], ""), (drug, "drug"), (dose, "dose"), (["daily"], "")],
        ])
        sentences.append([(word, "O" if not kind else ("B-" if i == 0 else "I-") + kind)
                          for words, kind in parts for i, word in enumerate(words)])
    return sentences


def conll(sentences: list[list[tuple[str, str]]], separator: str = "\t", docs_every: int = 0) -> str:
    lines = []
    for number, sentence in enumerate(sentences):
        if docs_every and number % docs_every == 0:
            lines += ["-DOCSTART- O", ""]
        lines += [f"{token}{separator}{tag}" for token, tag in sentence] + [""]
    return "\n".join(lines)


def write(tmp_path: pathlib.Path, text: str, name: str = "notes.conll") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], path: pathlib.Path, *extra: str) -> str:
    """The command's error output for a file it must refuse (exit 2, nothing written)."""
    out = tmp_path / "models"
    assert main(["ner", "--data", str(path), "--name", "meds", "--out", str(out), "--dry-run", *extra]) == 2
    assert not out.exists()
    return capsys.readouterr().err


def test_a_good_file_is_planned_with_the_users_tag_set(tmp_path, capsys) -> None:
    path = write(tmp_path, conll(medication_sentences(40), separator="  "))  # spaces work as well as tabs
    assert main(["ner", "--data", str(path), "--name", "meds", "--out", str(tmp_path / "m"), "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["labels"] == USER_TAGS
    assert plan["sentences"] == 40 and plan["train_size"] + plan["dev_size"] + plan["test_size"] == 40
    assert plan["model"] == "bilstm-crf" and plan["model_config"]["hidden_dim"] == 32  # sized from ~220 tokens
    assert not (tmp_path / "m").exists()


def test_wrong_column_counts_and_tags_are_refused_with_their_lines(tmp_path, capsys) -> None:
    lines = conll(medication_sentences(30)).split("\n")
    lines[1] = "took O extra"      # line 2: three columns
    lines[3] = "of"                # line 4: one column
    lines[5] = "for\tPER"          # line 6: not BIO
    lines[7] = ".\tS-drug"         # line 8: BIOES
    error = refused(tmp_path, capsys, write(tmp_path, "\n".join(lines)))
    assert "4 problem(s)" in error
    assert ":2: expected 2 columns" in error and "found 3" in error
    assert ":4: expected 2 columns" in error and "found 1" in error
    assert ":6: tag 'PER' is not O, B-<type> or I-<type>" in error
    assert ":8: tag 'S-drug' is BIOES/BILOU" in error


def test_an_entity_starting_with_i_is_repaired_and_reported_or_refused_when_strict(tmp_path, capsys) -> None:
    sentences = medication_sentences(30)
    sentences[0] = [("aspirin", "I-drug"), ("helps", "O"), ("fever", "I-symptom")]  # IOB1-style, lines 1 and 3
    path = write(tmp_path, conll(sentences))
    assert main(["ner", "--data", str(path), "--name", "meds", "--out", str(tmp_path / "m"), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["bio_repaired_lines"] == [1, 3]
    assert read_conll(path).sentences[0].tags == ("B-drug", "O", "B-symptom")
    error = refused(tmp_path, capsys, path, "--strict-bio")
    assert ":1: I-drug at the start of a sentence" in error and ":3: I-symptom after O" in error


def test_empty_tiny_and_entity_free_files_are_refused(tmp_path, capsys) -> None:
    assert "the file is empty" in refused(tmp_path, capsys, write(tmp_path, "\n\t\n", "empty.conll"))
    error = refused(tmp_path, capsys, write(tmp_path, conll(medication_sentences(5)), "tiny.conll"))
    assert "5 sentence(s); at least 20 are needed" in error
    no_entities = [[(token, "O") for token, _ in s] for s in medication_sentences(30)]
    error = refused(tmp_path, capsys, write(tmp_path, conll(no_entities), "plain.conll"))
    assert "no entity: every tag is O" in error


def test_a_missing_sentence_break_and_bad_bytes_are_refused_with_their_lines(tmp_path, capsys) -> None:
    sentences = medication_sentences(60)
    run_on = [pair for s in sentences[:30] for pair in s]  # 30 sentences without blank lines: >128 words
    start = 1 + sum(len(s) + 1 for s in sentences[30:])
    lines = conll([*sentences[30:], run_on]).encode().split(b"\n")
    lines[0] = b"caf\xe9\tO"  # Latin-1, not UTF-8
    path = tmp_path / "notes.conll"
    path.write_bytes(b"\n".join(lines))
    error = refused(tmp_path, capsys, path)
    assert "2 problem(s)" in error
    assert f":{start}: a sentence of " in error and "reads at most 128" in error
    assert ":1: not UTF-8 text" in error


def test_an_entity_type_seen_only_in_held_out_sentences_is_refused(tmp_path, capsys) -> None:
    sentences = medication_sentences(40)
    path = write(tmp_path, conll(sentences))
    held_out = read_conll(path).sentences
    test_sentence = split_file(read_conll(path), path, by_document=False).test[0]  # the split ignores tags
    sentences[test_sentence.index] = [(token, "B-allergen" if i == 0 else tag)
                                      for i, (token, tag) in enumerate(sentences[test_sentence.index])]
    line = 1 + sum(len(s.tokens) + 1 for s in held_out[: test_sentence.index])
    error = refused(tmp_path, capsys, write(tmp_path, conll(sentences)))
    assert f":{line}: entity type 'allergen' occurs only in sentences held out" in error


def test_split_by_document_keeps_each_document_in_one_part(tmp_path) -> None:
    path = write(tmp_path, conll(medication_sentences(100), docs_every=5))
    data = read_conll(path)
    split = split_file(data, path, by_document=True)
    document = dict(zip((s.index for s in data.sentences), data.documents, strict=True))
    owners = {name: {document[s.index] for s in part} for name, part in split.parts().items()}
    assert owners["train"].isdisjoint(owners["dev"]) and owners["train"].isdisjoint(owners["test"])
    assert owners["dev"].isdisjoint(owners["test"]) and len(data.documents) == 100


def test_an_existing_version_is_not_overwritten(tmp_path, capsys) -> None:
    (tmp_path / "m" / "meds" / "1").mkdir(parents=True)
    path = write(tmp_path, conll(medication_sentences(30)))
    assert main(["ner", "--data", str(path), "--name", "meds", "--out", str(tmp_path / "m"), "--version", "1",
                 "--dry-run"]) == 2
    assert "already exists" in capsys.readouterr().err


def train(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, path: pathlib.Path, out: pathlib.Path,
          name: str, *extra: str) -> dict:
    monkeypatch.setenv("SEQSERVE_CHECKPOINTS", str(tmp_path / "checkpoints"))
    assert main(["ner", "--data", str(path), "--name", name, "--out", str(out), "--threads", "1", *extra]) == 0
    manifest = json.loads((out / name / "1" / "manifest.json").read_text())
    assert manifest["labels"] == USER_TAGS and manifest["task"] == "ner"
    assert json.loads((out / name / "1" / "labels.json").read_text()) == USER_TAGS
    assert not [p for p in (out / name).iterdir() if p.name != "1"]  # no staging folder left behind
    return manifest


@pytest.mark.slow
def test_a_trained_bilstm_is_served_next_to_a_committed_model_with_the_users_types(
        tmp_path, monkeypatch, capsys, start_server) -> None:
    out = tmp_path / "models"
    committed = latest_version_dir("ner-bilstm-crf")
    shutil.copytree(committed, out / "ner-bilstm-crf" / committed.name)
    path = write(tmp_path, conll(medication_sentences(200, seed=1), docs_every=4))
    manifest = train(tmp_path, monkeypatch, path, out, "meds", "--split-by", "document", "--max-epochs", "12")
    assert manifest["data"]["split_by"] == "document" and manifest["metrics"]["majority_baseline"]["micro"]
    assert manifest["metrics"]["served"]["offset_errors"] == 0
    capsys.readouterr()

    server = start_server(model_dir=out)
    texts = ["she took 400 mg of amoxicillin for back pain .", "the fever eased after vitamin D ."]
    with grpc.insecure_channel(server.target) as channel:
        stub = ner_pb2_grpc.NerStub(channel)
        answer = stub.Recognize(ner_pb2.RecognizeEntitiesRequest(texts=texts, model="meds", include_tokens=True),
                                timeout=30)
        committed_answer = stub.Recognize(ner_pb2.RecognizeEntitiesRequest(
            texts=["Barack Obama visited London"], model="ner-bilstm-crf"), timeout=30)
    assert answer.model.name == "meds"
    found = [(e.type, e.text) for result in answer.results for e in result.entities]
    assert found and {kind for kind, _ in found} <= set(USER_TYPES)
    assert ("drug", "amoxicillin") in found  # the entity types are the file's, with exact offsets
    for text, result in zip(texts, answer.results, strict=True):
        assert all(text[e.start : e.end] == e.text for e in result.entities)
        assert {t.tag for t in result.tokens} <= set(USER_TAGS)
    committed_types = {e.type for result in committed_answer.results for e in result.entities}
    assert committed_types and committed_types.isdisjoint(USER_TYPES)


@pytest.mark.slow
def test_minilm_fine_tunes_on_the_users_tags(tmp_path, monkeypatch) -> None:
    out = tmp_path / "models"
    path = write(tmp_path, conll(medication_sentences(40, seed=2)))
    manifest = train(tmp_path, monkeypatch, path, out, "meds-minilm", "--model", "minilm", "--max-steps", "2")
    assert manifest["ner"]["tagger"] == "minilm" and manifest["training"]["steps"] == 2
    assert manifest["quantization"]["parity_int8_vs_torch"]["positions"] > 0
    assert set(manifest["metrics"]["served"]["per_type"]) <= set(USER_TYPES)


@pytest.mark.slow
def test_the_bilstm_trains_under_torchrun_and_rank_zero_publishes(tmp_path) -> None:
    """Two DDP processes; the BiLSTM-CRF's loss used to run outside the DDP wrapper (AttributeError)."""
    path = write(tmp_path, conll(medication_sentences(60, seed=3)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "SEQSERVE_CHECKPOINTS": str(tmp_path / "checkpoints")}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
         "training.train", "ner", "--data", str(path), "--name", "meds", "--out", str(tmp_path / "models"),
         "--threads", "1", "--max-epochs", "2"],
        env=env, cwd=REPO, timeout=300, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = json.loads((tmp_path / "models" / "meds" / "1" / "manifest.json").read_text())
    assert manifest["labels"] == USER_TAGS and manifest["training"]["steps"] > 0
