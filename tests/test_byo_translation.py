"""`python -m training.train translation` on a language pair the project never used: English words ->
invented Cyrillic words (a deterministic word-for-word "language"), as a TSV and as two aligned files.
Bad files are refused with line numbers; a tiny Transformer and a tiny GRU seq2seq train, publish next to
the committed Transformer and answer through the real server in the target script."""

from __future__ import annotations

import json
import pathlib
import random
import re
from collections.abc import Callable

import grpc
import pytest
from conftest import EXPORTED, ServerProcess
from seqserve.v1 import translation_pb2, translation_pb2_grpc
from tokenizers import Tokenizer

from training.byo.translation import choose_size
from training.tokenizer import UNK, train_joint_bpe
from training.train import main

LEXICON = {"cat": "кот", "dog": "пёс", "sees": "видит", "big": "большой", "small": "малый", "house": "дом",
           "river": "река", "green": "зелёный", "runs": "бежит", "to": "к", "the": "эта", "old": "старый",
           "bird": "птица", "sings": "поёт", "near": "около", "tree": "дерево"}
CYRILLIC_WORDS = re.compile(r"^[\u0400-\u04FF ]*$")
UNSEEN = "Ω日本🙂"  # never in the training text: spelled as UTF-8 bytes, never [UNK]


def sentence_pairs(count: int, seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    words = sorted(LEXICON)
    pairs = []
    for _ in range(count):
        sentence = [rng.choice(words) for _ in range(rng.randint(3, 7))]
        pairs.append((" ".join(sentence), " ".join(LEXICON[w] for w in sentence)))
    return pairs


def write_tsv(path: pathlib.Path, pairs: list[tuple[str, str]]) -> pathlib.Path:
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path


def train(tmp: pathlib.Path, *args: str) -> int:
    return main(["translation", "--name", "en-xx", "--source-lang", "en", "--target-lang", "ru",
                 "--out", str(tmp / "models"), "--checkpoint-dir", str(tmp / "checkpoint"), "--threads", "1",
                 *args])


# -- bad files ---------------------------------------------------------------------------------------------

def test_a_bad_tsv_is_refused_with_every_line_named(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    lines = [f"{s}\t{t}" for s, t in sentence_pairs(40)]
    lines[2] = "cat dog\tкот пёс\textra"        # line 3: ragged
    lines[4] = "cat dog"                        # line 5: one column
    lines[6] = "\tкот"                          # line 7: empty source
    lines[8] = "cat dog  \t  "                  # line 9: empty target
    lines[10] = "the cat sees the big green river near the old house\tк"  # line 11: 51 chars vs 1
    data = tmp_path / "pairs.tsv"
    data.write_bytes("\n".join(lines).encode() + b"\n" + b"cat\t\xff\xfe\n")  # line 41: not UTF-8
    assert train(tmp_path, "--data", str(data)) == 2
    error = capsys.readouterr().err
    assert f"{data}:3: expected 2 tab-separated columns (source, target), found 3" in error
    assert f"{data}:5: expected 2 tab-separated columns (source, target), found 1" in error
    assert f"{data}:7: empty source" in error and f"{data}:9: empty target" in error
    assert f"{data}:11: source has 51 characters and target 1" in error
    assert f"{data}:41: not UTF-8" in error
    assert "6 problem(s), nothing was trained" in error
    assert not (tmp_path / "models").exists() and not (tmp_path / "checkpoint").exists()


def test_two_files_must_be_line_aligned(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = sentence_pairs(40)
    source, target = tmp_path / "train.en", tmp_path / "train.ru"
    source.write_text("".join(f"{s}\n" for s, _ in pairs), encoding="utf-8")
    target.write_text("".join(f"{t}\n" for _, t in pairs[:-1]), encoding="utf-8")
    assert train(tmp_path, "--data", str(source), "--target-data", str(target)) == 2
    assert f"{source}: 40 lines, but {target} has 39: the two files must be line-aligned" in capsys.readouterr().err

    lines = [t for _, t in pairs]
    lines[11] = " "
    target.write_text("".join(f"{t}\n" for t in lines), encoding="utf-8")
    assert train(tmp_path, "--data", str(source), "--target-data", str(target)) == 2
    assert f"{source}:12: empty target (train.ru)" in capsys.readouterr().err


def test_too_few_pairs_for_a_split_are_refused(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_tsv(tmp_path / "pairs.tsv", sentence_pairs(12))
    assert train(tmp_path, "--data", str(data)) == 2
    assert "12 pairs; at least 30 are needed" in capsys.readouterr().err

    # Enough lines, but one source sentence repeated: a source text never straddles two parts.
    write_tsv(data, [("the cat", f"эта кот {'к ' * (i % 3)}".strip()) for i in range(40)])
    assert train(tmp_path, "--data", str(data)) == 2
    assert "1 distinct source texts leave dev and test empty" in capsys.readouterr().err


def test_bad_options_are_refused_by_name(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_tsv(tmp_path / "pairs.tsv", sentence_pairs(40))
    assert main(["translation", "--data", str(data), "--name", "x", "--source-lang", "english!",
                 "--target-lang", "ru"]) == 2
    assert "--source-lang 'english!'" in capsys.readouterr().err
    (tmp_path / "models" / "en-xx" / "1").mkdir(parents=True)
    assert train(tmp_path, "--data", str(data), "--version", "1") == 2
    assert "already exists" in capsys.readouterr().err


def test_a_dry_run_reports_the_plan_and_writes_nothing(tmp_path: pathlib.Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = write_tsv(tmp_path / "pairs.tsv", sentence_pairs(400))
    assert train(tmp_path, "--data", str(data), "--model", "seq2seq", "--dry-run") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["model"] == "seq2seq" and plan["size"] == "tiny" and plan["languages"] == "en -> ru"
    assert plan["train_pairs"] + plan["dev_pairs"] + plan["test_pairs"] == 400 and plan["test_pairs"] > 0
    assert plan["out"] == str(tmp_path / "models" / "en-xx" / "1")
    assert not (tmp_path / "models").exists() and not (tmp_path / "checkpoint").exists()


def test_the_model_is_sized_from_the_data_and_the_cores() -> None:
    assert choose_size(300, cores=2).name == "tiny"
    assert choose_size(10_000, cores=2).name == "small"
    assert choose_size(100_000, cores=2).name == "small"  # the committed size needs more cores
    assert choose_size(100_000, cores=8).name == "base"


# -- the tokenizer ----------------------------------------------------------------------------------------

def test_byte_fallback_spells_unseen_characters_and_decodes_them_back() -> None:
    texts = [t for pair in sentence_pairs(100) for t in pair]
    tokenizer = train_joint_bpe(texts, vocab_size=400, min_frequency=2, byte_fallback=True)
    assert tokenizer.get_vocab_size() <= 400
    assert all(tokenizer.token_to_id(f"<0x{b:02X}>") == 4 + b for b in range(256))
    text = f"кот {UNSEEN} dog"
    encoding = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.token_to_id(UNK) not in encoding.ids
    assert "<0xF0>" in encoding.tokens  # 🙂 as its four UTF-8 bytes
    # As the server decodes (skip_special_tokens=True): byte tokens are vocabulary, not special tokens.
    assert tokenizer.decode(encoding.ids, skip_special_tokens=True) == text
    # The committed English -> French tokenizer keeps mapping unseen characters to [UNK].
    plain = train_joint_bpe(texts, vocab_size=400, min_frequency=2)
    assert plain.token_to_id(UNK) in plain.encode(UNSEEN, add_special_tokens=False).ids


# -- train, publish, serve ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A model dir with the committed Transformer (linked) beside two versions trained here: en-xx/1 (a
    Transformer, from a TSV) and en-xx-gru/1 (the seq2seq, from two aligned files)."""
    tmp = tmp_path_factory.mktemp("byo-translation")
    pairs = sentence_pairs(400)
    data = write_tsv(tmp / "pairs.tsv", pairs)
    (tmp / "models").mkdir()
    (tmp / "models" / "transformer").symlink_to(EXPORTED / "transformer")
    assert train(tmp, "--data", str(data), "--max-steps", "200") == 0
    source, target = tmp / "train.en", tmp / "train.ru"
    source.write_text("".join(f"{s}\n" for s, _ in pairs), encoding="utf-8")
    target.write_text("".join(f"{t}\n" for _, t in pairs), encoding="utf-8")
    assert main(["translation", "--data", str(source), "--target-data", str(target), "--name", "en-xx-gru",
                 "--model", "seq2seq", "--source-lang", "en", "--target-lang", "ru", "--out", str(tmp / "models"),
                 "--checkpoint-dir", str(tmp / "checkpoint-gru"), "--threads", "1", "--max-steps", "200"]) == 0
    return tmp / "models"


@pytest.mark.slow
def test_the_published_versions_record_the_pair_and_beat_the_copy_baseline(published: pathlib.Path) -> None:
    for name, architecture in (("en-xx", "Transformer"), ("en-xx-gru", "GRU")):
        manifest = json.loads((published / name / "1" / "manifest.json").read_text("utf-8"))
        assert manifest["languages"] == {"source": "en", "target": "ru"} and not manifest["default_for_task"]
        assert architecture in manifest["description"] and "en -> ru" in manifest["description"]
        assert manifest["training"]["tokenizer"]["byte_fallback"] is True
        assert all(len(manifest["data"][f"{part}_sha256"]) == 64 for part in ("train", "dev", "test"))
        assert manifest["export_parity"]["greedy_tokens_equal"]
        metrics = manifest["metrics"]
        assert metrics["copy_source_baseline"]["chrf"] < metrics["greedy"]["chrf"], metrics


@pytest.mark.slow
def test_the_server_answers_in_the_target_script_beside_the_committed_model(
        published: pathlib.Path, start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(published)
    with grpc.insecure_channel(server.target) as channel:
        stub = translation_pb2_grpc.TranslationStub(channel)
        texts = ["the old bird sings near the tree", "the cat sees the dog", f"the cat {UNSEEN}"]
        for name in ("en-xx", "en-xx-gru"):
            for beam in (1, 4):
                response = stub.Translate(translation_pb2.TranslateRequest(
                    texts=texts, model=name, options=translation_pb2.DecodingOptions(beam_size=beam, n_best=1)),
                    timeout=60)
                assert response.model.name == name
                outputs = [r.hypotheses[0].text for r in response.results]
                assert all(CYRILLIC_WORDS.match(o) for o in outputs), (name, beam, outputs)
                assert any(outputs), (name, beam, outputs)
            pieces = list(stub.TranslateStream(translation_pb2.TranslateStreamRequest(
                text=texts[0], model=name), timeout=60))
            best = stub.Translate(translation_pb2.TranslateRequest(
                texts=texts[:1], model=name, options=translation_pb2.DecodingOptions(beam_size=1)), timeout=60)
            assert "".join(p.text for p in pieces) == best.results[0].hypotheses[0].text
        # The committed model still serves the task's calls that name no model.
        default = stub.Translate(translation_pb2.TranslateRequest(texts=["Jesus wept."]), timeout=60)
        assert default.model.name == "transformer"
    tokenizer = Tokenizer.from_file(str(published / "en-xx" / "1" / "tokenizer.json"))
    ids = tokenizer.encode(UNSEEN, add_special_tokens=False).ids
    assert tokenizer.token_to_id(UNK) not in ids and tokenizer.decode(ids, skip_special_tokens=True) == UNSEEN
