"""The committed document model through the serving pipeline (the code the server runs): the sentence
rule, distributions, offsets, batch invariance and the model's limits."""

from __future__ import annotations

import pytest
from exported_models import REPO, latest_version_dir

from service.model.manifest import read_manifest
from service.pipelines.document import DocumentPipeline, split_sentences
from service.runtime.version_loader import load_version

VERSION_DIR = latest_version_dir("han-vader-docs")
DOCUMENTS = [
    "The battery lasts all day. The screen is bright and sharp! I love this phone.",
    "Shipping took a month.\nThe case cracked on the first drop. Support never answered; avoid it.",
    "The council meets on Tuesday.",
    "Great lens, sharp pictures. But the autofocus hunts in low light, and the menus are a maze. "
    "Still, for the price (under $300.) it is a fine camera. \"Recommended?\" Yes.",
]


@pytest.fixture(scope="module")
def pipeline() -> DocumentPipeline:
    return DocumentPipeline(load_version(VERSION_DIR))


def test_sentences_end_after_terminal_punctuation_and_at_line_breaks() -> None:
    text = "Hi there.  \"Yes!\" he said.\nNew line  ok? (see above.) no break in 2.5 mm or e.g.x"
    assert [text[s:e] for s, e in split_sentences(text)] == [
        "Hi there.", "\"Yes!\"", "he said.", "New line  ok?", "(see above.)", "no break in 2.5 mm or e.g.x"]
    assert split_sentences("   \n  ") == []
    assert [("a b"[s:e]) for s, e in split_sentences("a b")] == ["a b"]


def test_documents_get_distributions_over_labels_sentences_and_words(pipeline: DocumentPipeline) -> None:
    for text, prediction in zip(DOCUMENTS, pipeline(DOCUMENTS), strict=True):
        assert list(prediction.probabilities) == ["negative", "neutral", "positive"]
        assert sum(prediction.probabilities.values()) == pytest.approx(1, abs=1e-5)
        assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)
        assert [(s.start, s.end) for s in prediction.sentences] == split_sentences(text)
        assert sum(s.weight for s in prediction.sentences) == pytest.approx(1, abs=1e-5)
        for sentence in prediction.sentences:
            assert sum(sentence.probabilities.values()) == pytest.approx(1, abs=1e-5)
            assert sum(t.weight for t in sentence.tokens) == pytest.approx(1, abs=1e-5)
            assert all(sentence.start <= t.start <= t.end <= sentence.end for t in sentence.tokens)


def test_word_offsets_are_exact_code_point_spans_of_the_document(pipeline: DocumentPipeline) -> None:
    text = "Café crème 😀 was GREAT! Ünïcode ☕ is fine.  Terrible service, though."
    (prediction,) = pipeline([text])
    assert len(prediction.sentences) == 3
    for sentence in prediction.sentences:
        covered = "".join(text[t.start : t.end] for t in sentence.tokens)
        # the tokenizer drops whitespace; every other character of the sentence is in exactly one token
        assert covered == "".join(text[sentence.start : sentence.end].split())


def test_a_document_alone_and_in_a_batch_gets_the_same_answer(pipeline: DocumentPipeline) -> None:
    batched = pipeline(DOCUMENTS)
    for text, in_batch in zip(DOCUMENTS, batched, strict=True):
        (alone,) = pipeline([text])
        assert alone.label == in_batch.label
        for label, p in alone.probabilities.items():
            assert in_batch.probabilities[label] == pytest.approx(p, abs=1e-5)
        for a, b in zip(alone.sentences, in_batch.sentences, strict=True):
            assert (a.start, a.end, a.label) == (b.start, b.end, b.label)
            assert b.weight == pytest.approx(a.weight, abs=1e-5)
            assert [t.weight for t in b.tokens] == pytest.approx([t.weight for t in a.tokens], abs=1e-5)


def test_documents_over_the_limits_are_named_and_never_run(pipeline: DocumentPipeline) -> None:
    many = " ".join(["Good."] * (pipeline.max_sentences + 1))
    problem = pipeline.limit_problem(many)
    assert problem is not None
    assert (problem.field, problem.count, problem.limit) == ("sentences", pipeline.max_sentences + 1,
                                                             pipeline.max_sentences)
    long_sentence = "Fine. " + " ".join(["word"] * (pipeline.max_sentence_tokens + 1))
    problem = pipeline.limit_problem(long_sentence)
    assert problem is not None
    assert (problem.field, problem.unit, problem.limit) == ("sentences[1]", "tokens", pipeline.max_sentence_tokens)
    assert pipeline.limit_problem(" ".join(["Good."] * pipeline.max_sentences)) is None
    with pytest.raises(ValueError, match="max_sentences"):
        pipeline([many])


def test_readme_and_docs_quote_the_committed_test_metrics() -> None:
    metrics = read_manifest(VERSION_DIR).data["metrics"]
    row = f"| `han-vader-docs` v{VERSION_DIR.name} | " + " | ".join(
        f"{metrics['documents'][domain]['macro_f1']:.3f}" for domain in ("pooled", "amazon", "nyt"))
    assert row in (REPO / "README.md").read_text("utf-8")
    han_md = (REPO / "docs" / "han.md").read_text("utf-8")
    assert row + f" | {metrics['documents']['pooled']['accuracy']:.3f} |" in han_md
    average = metrics["sentence_average_baseline"]
    assert " | ".join(f"**{average[d]['macro_f1']:.3f}**" for d in ("pooled", "amazon", "nyt")) in han_md
    unseen = metrics["unseen_sentences_comparison"]
    assert (f"macro-F1 {unseen['sentence_average']['macro_f1']:.3f}" in han_md
            and f"the HAN's {unseen['han']['macro_f1']:.3f}" in han_md)
