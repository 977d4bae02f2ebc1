"""The test metrics the README and the task docs quote are the committed manifests' metrics, as printed.

Choice: the tables stay hand-written and are tested against the manifests, rather than generated. The
docs mix manifest numbers with context no manifest holds (VADER's wording, superseded versions kept in
git history, published papers, training time, speed), bold the winner of each column and sit inside
prose; a generator would have to own all of that or splice rows into hand-written tables. So each check
below finds the row (or the sentence) by its label and compares the cells that come from a manifest,
rounded to the digits the doc prints. Rows about models no longer committed (sasrec-ml1m v3, MiniLM v1)
are history and are not checked.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from typing import Any

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPORTED = REPO / "exported"
DOMAINS = ("pooled", "tweets", "movies", "amazon", "nyt")


def read_manifest_json(model: str, version: str) -> dict[str, Any]:
    return json.loads((EXPORTED / model / version / "manifest.json").read_text("utf-8"))


def metrics(model: str, version: str) -> dict[str, Any]:
    return read_manifest_json(model, version)["metrics"]


def section(doc: str, heading: str) -> str:
    """The text under `heading` (a whole line), up to the next heading of the same or a higher level."""
    text = (REPO / doc).read_text("utf-8")
    level = heading.split(" ", 1)[0]
    after = text.split(f"\n{heading}\n", 1)
    assert len(after) == 2, f"{doc}: no heading {heading!r}"
    body = after[1]
    for line_start in (f"\n{'#' * n} " for n in range(1, len(level) + 1)):
        body = body.split(line_start, 1)[0]
    return body


def cells(text: str, label: str) -> list[str]:
    """The cells of the one table row whose first cell is `label` (bold and code marks dropped)."""
    def clean(cell: str) -> str:
        return cell.strip().replace("**", "").replace("`", "")

    rows = [[clean(c) for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]
    matching = [row for row in rows if row[0] == label.replace("`", "")]
    assert len(matching) == 1, f"no row (or several) labelled {label!r}"
    return matching[0][1:]


def f3(value: float) -> str:
    return f"{value:.3f}"


def f2(value: float) -> str:
    return f"{value:.2f}"


def f4(value: float) -> str:
    return f"{value:.4f}"


def entity_f1(model: str, version: str) -> float:
    return metrics(model, version)["served"]["micro"]["f1-score"]


# -- README ----------------------------------------------------------------------------------------

def test_the_readme_model_summary_quotes_the_committed_test_metrics() -> None:
    summary = (REPO / "README.md").read_text("utf-8").split("## Two commands", 1)[0]
    summary = " ".join(summary.split())  # the sentences wrap anywhere
    assert f"test entity F1 {f3(entity_f1('ner-minilm-int8', '2'))}" in summary
    assert f"`ner-bilstm-crf` by name ({f3(entity_f1('ner-bilstm-crf', '1'))})" in summary
    served = metrics("sasrec-ml1m", "4")["served"]
    assert (f"test HR@10 {f3(served['sampled_hr@10'])} / NDCG@10 {f3(served['sampled_ndcg@10'])} with 100 sampled "
            f"negatives, {f3(served['full_hr@10'])} / {f3(served['full_ndcg@10'])} over the whole catalogue") in summary


def test_the_readme_quality_tables_are_the_committed_test_metrics() -> None:
    quality = section("README.md", "## Quality")
    sentiment = metrics("sentiment-bigru", "2")
    assert cells(quality, "seqserve `sentiment-bigru` v2") == [f3(sentiment["served"][d]["macro_f1"]) for d in DOMAINS]
    minilm = metrics("sentiment-minilm-int8", "1")
    assert cells(quality, "seqserve `sentiment-minilm-int8` v1 (default)") == [
        f3(minilm["served"][d]["macro_f1"]) for d in DOMAINS]
    assert minilm["vader_baseline"] == sentiment["vader_baseline"]  # the same sentences, so one VADER row
    assert cells(quality, "VADER 3.3.2") == [f3(sentiment["vader_baseline"][d]["macro_f1"]) for d in DOMAINS]
    for label, model, decoding in (("`transformer` v1, beam 4", "transformer", "beam4"),
                                   ("`transformer` v1, greedy", "transformer", "greedy"),
                                   ("`seq2seq-attention` v1 (BiGRU + general attention), beam 4", "seq2seq-attention",
                                    "beam4"),
                                   ("`seq2seq-attention` v1, greedy", "seq2seq-attention", "greedy"),
                                   ("`seq2seq-local` v1 (local-p attention, step 1,000), beam 4", "seq2seq-local",
                                    "beam4"),
                                   ("`seq2seq-local` v1, greedy", "seq2seq-local", "greedy"),
                                   ("`convs2s` v1 (ConvS2S), beam 4", "convs2s", "beam4"),
                                   ("`convs2s` v1, greedy", "convs2s", "greedy"),
                                   ("copy the source (baseline)", "transformer", "copy_source_baseline")):
        scores = metrics(model, "1")[decoding]
        assert cells(quality, label) == [f2(scores["bleu"]), f2(scores["chrf"])], label


# -- the task docs' main quality tables --------------------------------------------------------------

def test_docs_sentiment_table_is_the_committed_test_metrics() -> None:
    served, vader = metrics("sentiment-bigru", "2")["served"], metrics("sentiment-bigru", "2")["vader_baseline"]
    text = (REPO / "docs/sentiment.md").read_text("utf-8")
    for domain in DOMAINS:
        assert cells(text, domain) == [
            str(served[domain]["n"]), f3(served[domain]["macro_f1"]), f3(vader[domain]["macro_f1"]),
            f3(served[domain]["accuracy"]), f3(vader[domain]["accuracy"]),
        ], domain


def table(text: str, header: str) -> str:
    """The markdown table whose header row starts with `header`, up to the first blank line."""
    after = text.split(f"\n{header}", 1)
    assert len(after) == 2, f"no table headed {header!r}"
    return header + after[1].split("\n\n", 1)[0]


def test_docs_sentiment_minilm_tables_are_the_committed_metrics() -> None:
    text = (REPO / "docs/sentiment.md").read_text("utf-8")
    manifest = read_manifest_json("sentiment-minilm-int8", "1")
    served, fp32 = manifest["metrics"]["served"], manifest["quantization"]["fp32_measured_beside"]
    test = table(text, "| model (test split, 2,371 sentences) |")
    assert cells(test, "`sentiment-minilm-int8` v1 (served, default)") == [f3(served[d]["macro_f1"]) for d in DOMAINS]
    assert cells(test, "`sentiment-minilm` v1 fp32 (not published)") == [f3(fp32[d]["macro_f1"]) for d in DOMAINS]
    dev, dev_figures = table(text, "| model (dev split, 2,370 sentences) |"), manifest["dev_comparison"]["macro_f1"]
    for label, key in (("`sentiment-minilm-int8` v1", "sentiment-minilm-int8 v1"),
                       ("`sentiment-minilm` v1 fp32", "sentiment-minilm v1 fp32 (not published)"),
                       ("`sentiment-bigru` v2", "sentiment-bigru v2"), ("VADER 3.3.2", "VADER 3.3.2")):
        assert cells(dev, label) == [f3(dev_figures[key][d]) for d in DOMAINS], label
    challenge = manifest["metrics"]["challenge"]
    rows = table(text, "| model (challenge set, macro-F1) |")
    for label, figures in (("`sentiment-minilm-int8` v1", challenge["served"]),
                           ("VADER 3.3.2", challenge["vader_baseline"])):
        assert cells(rows, label) == [f3(f["macro_f1"]) for f in figures.values()], label
    assert cells(rows, "`sentiment-minilm` v1 fp32") == [
        f3(v) for v in manifest["quantization"]["challenge_vs_fp32"]["fp32_served"].values()]
    bigru = metrics("sentiment-bigru", "2")["challenge"]["served"]
    assert cells(rows, "`sentiment-bigru` v2") == [f3(f["macro_f1"]) for f in bigru.values()]


def test_docs_ner_table_is_the_committed_test_metrics() -> None:
    text = (REPO / "docs/ner.md").read_text("utf-8")

    def precision_recall_f1(micro: dict[str, float]) -> list[str]:
        return [f3(micro["precision"]), f3(micro["recall"]), f3(micro["f1-score"])]

    minilm = metrics("ner-minilm-int8", "2")
    for label, micro in (("majority tag per token", minilm["majority_baseline"]["micro"]),
                         ("`ner-bilstm-crf` v1", metrics("ner-bilstm-crf", "1")["served"]["micro"]),
                         ("`ner-minilm-int8` v2 (BIO Viterbi, default)", minilm["served"]["micro"])):
        assert cells(text, label)[1:4] == precision_recall_f1(micro), label


def test_docs_recommendation_table_is_the_committed_test_metrics() -> None:
    text = (REPO / "docs/recommendation.md").read_text("utf-8")
    keys = ("sampled_hr@10", "sampled_ndcg@10", "full_hr@10", "full_ndcg@10")
    for label, scores in (
        ("sasrec-ml1m v4, served (v3's SASRec + EASE over the whole history)", metrics("sasrec-ml1m", "4")["served"]),
        ("sasrec-ml1m-int8 v4, served", metrics("sasrec-ml1m-int8", "4")["served"]),
        ("popularity, same protocols", metrics("sasrec-ml1m", "4")["popularity_baseline"]),
    ):
        assert cells(text, label) == [f4(scores[key]) for key in keys], label


def test_docs_translation_tables_are_the_committed_test_metrics() -> None:
    text = (REPO / "docs/translation.md").read_text("utf-8")
    transformer, seq2seq, int8 = metrics("transformer", "1"), metrics("seq2seq-attention", "1"), \
        metrics("transformer-int8", "1")
    local = metrics("seq2seq-local", "1")
    for label, scores in (("copy the English source (baseline)", transformer["copy_source_baseline"]),
                          ("`transformer` v1 (step 1,250), greedy", transformer["greedy"]),
                          ("`transformer` v1 (step 1,250), beam 4, length penalty 0.6", transformer["beam4"]),
                          ("`seq2seq-attention` v1, greedy", seq2seq["greedy"]),
                          ("`seq2seq-attention` v1, beam 4, length penalty 0.6", seq2seq["beam4"]),
                          ("`seq2seq-local` v1 (step 1,000), greedy", local["greedy"]),
                          ("`seq2seq-local` v1 (step 1,000), beam 4, length penalty 0.6", local["beam4"]),
                          ("`convs2s` v1, greedy", metrics("convs2s", "1")["greedy"]),
                          ("`convs2s` v1, beam 4, length penalty 0.6", metrics("convs2s", "1")["beam4"])):
        assert cells(text, label) == [f2(scores["bleu"]), f2(scores["chrf"])], label
    # The span comparison: the longest test decile, both models, BLEU and chrF (speed is context).
    span = local["span_comparison"]["longest_decile"]
    for label, scores in (("local-p: `seq2seq-local` v1 (step 1,000), greedy", span["model"]["greedy"]),
                          ("global: `seq2seq-attention` v1 (step 1,589), greedy", span["baseline"]["greedy"]),
                          ("local-p: `seq2seq-local` v1 (step 1,000), beam 4", span["model"]["beam4"]),
                          ("global: `seq2seq-attention` v1 (step 1,589), beam 4", span["baseline"]["beam4"])):
        assert cells(text, label)[:2] == [f2(scores["bleu"]), f2(scores["chrf"])], label

    def bleu_chrf(scores: dict[str, float]) -> str:
        return f"{f2(scores['bleu'])} / {f2(scores['chrf'])}"

    # The int8 table: each published variant's greedy and beam 4 scores (the delta follows in brackets).
    for label, model_metrics in (("`transformer` v1 (fp32)", transformer),
                                 ("`transformer-int8` v1 (one text per run)", int8),
                                 ("`seq2seq-attention` v1 (fp32)", seq2seq)):
        row = cells(text, label)
        assert row[1].startswith(bleu_chrf(model_metrics["greedy"])), label
        assert row[2].startswith(bleu_chrf(model_metrics["beam4"])), label


Delta = Callable[[], str]


def signed(value: float, digits: int) -> str:
    return f"{round(value, digits):+.{digits}f}"


@pytest.mark.parametrize(("label", "quoted"), [
    ("`sentiment-bigru-int8`", lambda: "macro-F1 " + signed(
        metrics("sentiment-bigru-int8", "1")["served"]["pooled"]["macro_f1"]
        - metrics("sentiment-bigru", "2")["served"]["pooled"]["macro_f1"], 4)),
    ("`sentiment-minilm-int8` (served int8 only, the sentiment default)", lambda: "macro-F1 " + signed(
        metrics("sentiment-minilm-int8", "1")["served"]["pooled"]["macro_f1"]
        - read_manifest_json("sentiment-minilm-int8", "1")["quantization"]["fp32_measured_beside"]["pooled"][
            "macro_f1"], 4)),
    ("`transformer-int8`", lambda: "BLEU {} greedy / {} beam 4".format(*(
        signed(metrics("transformer-int8", "1")[d]["bleu"] - metrics("transformer", "1")[d]["bleu"], 2)
        for d in ("greedy", "beam4")))),
    ("`ner-bilstm-crf-int8`", lambda: "entity F1 " + signed(
        entity_f1("ner-bilstm-crf-int8", "1") - entity_f1("ner-bilstm-crf", "1"), 3)),
    ("`sasrec-ml1m-int8` (v4, of sasrec-ml1m v4: SASRec d = 256 + EASE term)",
     lambda: "sampled HR@10 {}, full NDCG@10 {}".format(*(
         signed(metrics("sasrec-ml1m-int8", "4")["served"][k] - metrics("sasrec-ml1m", "4")["served"][k], 4)
         for k in ("sampled_hr@10", "full_ndcg@10")))),
])
def test_docs_serving_int8_table_quotes_the_measured_deltas(label: str, quoted: Delta) -> None:
    assert cells((REPO / "docs/serving.md").read_text("utf-8"), label)[1].startswith(quoted()), label


def test_docs_translation_clean_table_is_the_committed_clean_and_leaked_metrics() -> None:
    text = (REPO / "docs/translation.md").read_text("utf-8")
    for label, model, decoding in (("`transformer` v1 / beam 4", "transformer", "beam4"),
                                   ("`transformer` v1 / greedy", "transformer", "greedy"),
                                   ("`transformer-int8` v1 / beam 4", "transformer-int8", "beam4"),
                                   ("`seq2seq-attention` v1 / beam 4", "seq2seq-attention", "beam4"),
                                   ("`seq2seq-attention` v1 / greedy", "seq2seq-attention", "greedy"),
                                   ("`convs2s` v1 / beam 4", "convs2s", "beam4"),
                                   ("`convs2s` v1 / greedy", "convs2s", "greedy"),
                                   ("`seq2seq-local` v1 / beam 4", "seq2seq-local", "beam4"),
                                   ("copy the source / baseline", "transformer", "copy_source_baseline")):
        m = metrics(model, "1")
        assert m["clean"]["n"] + m["leaked"]["n"] == m["n"]
        expected = [f"{f2(part[decoding]['bleu'])} / {f2(part[decoding]['chrf'])}"
                    for part in (m, m["clean"], m["leaked"])]
        assert cells(text, label) == expected, label


def test_the_readme_quotes_the_clean_test_bleu() -> None:
    clean = metrics("transformer", "1")["clean"]
    quality = " ".join(section("README.md", "## Quality").split())
    bleu = f2(clean["beam4"]["bleu"])
    assert f"on the other {clean['n']:,} the `transformer` scores {bleu} BLEU with beam 4" in quality
