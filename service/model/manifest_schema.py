"""The manifest of a model version as typed data: the public contract of `exported/<model>/<version>/`.

A version folder is served because its `manifest.json` says what the files are and how to run them, so
anyone who brings a model writes one. It is parsed once, at load, into these types: an unknown
`format_version`, a missing field or a field of the wrong type is refused with a message naming the
file and the field, before any graph is opened.

Two kinds of field:
- *serving* fields (onnx, tokenizer, special_tokens, labels, limits, decoding, ner, catalogue, ...)
  are read by the server and fully typed; an unknown key inside one of their sections is refused (a
  typo such as `max_sorce_tokens` must not silently fall back to a default);
- *records* (data, training, metrics, comparison, parity, quantization details, ...) say where the
  model came from and what was measured. The server only shows them, so they are free-form JSON
  objects; the top level accepts any other record too (`extra` below), so training tools can add
  provenance without a schema change.

`docs/manifest.md` describes every field; `docs/manifest.schema.json` is generated from these types
(`python -m service.model.manifest_schema > docs/manifest.schema.json`), committed, and every committed
manifest is validated against it in the tests.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION = 1

# A tensor dimension: a fixed size, or a name shared by every tensor that must agree on it
# ("batch", "sequence", "src_len"...).
Dimension = int | str
Record = dict[str, Any]


class _Section(BaseModel):
    """A serving section: its keys are the contract, so unknown ones are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Section):
    name: str = Field(description="The graph input or output name.")
    dtype: str = Field(description="numpy dtype name: int64, float32, ...")
    shape: list[Dimension] = Field(
        description="Sizes; a string names a dynamic dimension that every tensor using the same name "
        "must agree on (the server checks this for V2 calls).")


class GraphSpec(_Section):
    inputs: list[TensorSpec] = Field(default_factory=list, description="The graph's inputs.")
    outputs: list[TensorSpec] = Field(default_factory=list, description="The graph's outputs.")


class ExternalData(_Section):
    file: str = Field(description="The file holding weights that several graphs share (ONNX external data).")
    tensors: list[str] = Field(default_factory=list, description="The initializers stored in it.")
    bytes: int = Field(0, ge=0, description="Its size.")
    bytes_saved: int = Field(0, ge=0, description="What storing them once saved.")
    repackaged_from_sha256: dict[str, str] = Field(
        default_factory=dict, description="Graph file -> sha256 of the self-contained graph it was made from.")


class OnnxSection(_Section):
    file: str = Field("model.onnx", description="The main graph (translation: the encoder).")
    opset: int | None = Field(None, description="The ONNX opset the graphs were exported with.")
    exporter: str | None = Field(None, description="What exported them (a record).")
    inputs: list[TensorSpec] = Field(default_factory=list, description="The main graph's inputs.")
    outputs: list[TensorSpec] = Field(default_factory=list, description="The main graph's outputs.")
    graphs: dict[str, GraphSpec] = Field(
        default_factory=dict,
        description="Every graph of a multi-graph version (file -> inputs/outputs); the server opens one "
        "session per graph listed here.")
    external_data: ExternalData | None = Field(None, description="Weights the graphs share, stored once.")
    notes: str | None = Field(None, description="Free text on how to feed the graph (a record).")


class SpecialTokens(_Section):
    pad_id: int = Field(ge=0, description="Padding id (masked out).")
    unk_id: int = Field(ge=0, description="The unknown token's id.")
    unk: str | None = Field(None, description="The unknown token's text (sentiment shows it per token).")
    bos_id: int | None = Field(None, ge=0, description="Start-of-sequence id (translation).")
    eos_id: int | None = Field(None, ge=0, description="End-of-sequence id (translation).")


class FromEncoderOutput(_Section):
    encoder_output: str = Field(description="The encoder output the state starts from.")


class Zeros(_Section):
    zeros: list[Dimension] = Field(description="Shape of a zero tensor; may use the symbols batch and src_len.")


class DecodingDefaults(_Section):
    beam_size: int = Field(1, ge=1, description="Beam width when the request leaves it at 0.")
    length_penalty: float = Field(0.6, ge=0.0, description="GNMT alpha when the request leaves it unset.")


ConfidenceFeature = Literal["mean_log_prob", "min_log_prob", "subwords_per_word", "unknown_rate", "coverage",
                            "attention_entropy", "log_length_ratio", "repetition"]


class ConfidenceSection(_Section):
    """A translation confidence: a logistic regression over features of the decoded best hypothesis
    (service/pipelines/translation_confidence.py), fitted by training/calibrate_translation.py."""

    features: list[ConfidenceFeature] = Field(min_length=1, description="The features, in coefficient order.")
    mean: list[float] = Field(description="Each feature's mean on the fitting data (subtracted first).")
    scale: list[float] = Field(description="Each feature's standard deviation there (divided by next).")
    coefficients: list[float] = Field(description="The weight of each standardised feature.")
    intercept: float = Field(description="Added to the weighted sum before the sigmoid.")
    coverage_threshold: float = Field(
        0.5, gt=0, description="Attention mass a source subword must receive over the output to count as covered.")
    fitted: Record = Field(default_factory=dict, description="How it was fitted and measured (a record).")

    @model_validator(mode="after")
    def _same_lengths(self) -> ConfidenceSection:
        lengths = {len(self.features), len(self.mean), len(self.scale), len(self.coefficients)}
        if len(lengths) != 1:
            raise ValueError("features, mean, scale and coefficients need one value per feature")
        if any(not v > 0 for v in self.scale):
            raise ValueError("every scale must be positive")
        return self


class DecodingSection(_Section):
    """The step-graph decoding contract (docs/translation-graphs.md)."""

    encoder: str = Field(description="The encoder graph file.")
    decoder: str = Field(description="The decoder-step graph file.")
    memory: list[str] = Field(default_factory=list,
                              description="Encoder outputs fed unchanged to every decoder step.")
    state: dict[str, str] = Field(default_factory=dict,
                                  description="Decoder state: past_<name> input -> present_<name> output.")
    initial_state: dict[str, FromEncoderOutput | Zeros] = Field(
        default_factory=dict, description="How each past_<name> starts: an encoder output or zeros.")
    bos_id: int = Field(ge=0, description="The first decoder input.")
    eos_id: int = Field(ge=0, description="Ends a hypothesis; appended to every source.")
    pad_id: int = Field(ge=0, description="Pads sources to the batch's longest.")
    source_prefix_ids: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list, description="Ids put before every source's subwords, as the model was trained "
        "(an imported BART's <s>); none by default. The [EOS] after the subwords is always appended.")
    max_source_tokens: int = Field(ge=2, description="Source subwords, [EOS] and prefix included; longer is "
                                   "refused.")
    max_target_tokens: int = Field(ge=1, description="The most output tokens a decode may produce.")
    max_output_ratio: float = Field(1.5, gt=0, description="Default output budget: source length x this ...")
    max_output_extra: int = Field(10, ge=0, description="... plus this, capped at max_target_tokens.")
    defaults: DecodingDefaults = Field(default_factory=DecodingDefaults, description="Options a request leaves unset.")
    min_output_tokens: int = Field(
        1, ge=0, le=8, description="[EOS] is not allowed before this many output tokens: 1 (the default) means a "
        "non-empty source never gets an empty translation; 0 lets the model end at once.")
    max_loop_ngram: int = Field(
        0, ge=0, le=8, description="Repetition-loop guard: an n-gram (n <= this, subword tokens) that has just "
        "occurred twice in a row may not start a third copy (service/pipelines/output_constraints.py); 0: off.")
    confidence: ConfidenceSection | None = Field(
        None, description="The translation confidence's fitted coefficients; absent: results carry no confidence.")


class NerSection(_Section):
    tagger: Literal["minilm", "bilstm-crf"] = Field(description="Which tagger pipeline runs the graph.")
    word_pattern: str = Field(description="The regex (the `regex` module's syntax) that splits text into words.")
    decoder: str = Field("argmax at first subwords", description="How tags are decoded from the graph's "
                         "scores: minilm: 'bio-viterbi' or 'argmax at first subwords'; bilstm-crf: a record.")
    shape_features: bool = Field(False, description="minilm: the graph also takes word-shape ids (shape_ids).")
    vocab: str | None = Field(None, description="bilstm-crf: the word and character vocabulary file.")
    crf: str | None = Field(None, description="bilstm-crf: the CRF transition parameters file.")
    max_word_chars: int | None = Field(None, ge=1, description="bilstm-crf: characters per word kept.")


class CatalogueSection(_Section):
    items: str = Field(description="The item catalogue file (ids, titles, metadata).")
    popularity: str | None = Field(None, description="Item popularity counts (the cold-start answer).")


class ClassificationSection(_Section):
    """How a classification graph reads text (docs/your-own-models.md)."""

    add_special_tokens: bool = Field(
        False, description="Encode with the tokenizer's special tokens ([CLS] text [SEP] for a BERT-family "
        "encoder); false for a model trained on the text's subwords alone (the BiGRU). Special tokens are "
        "never listed among the tokens answered.")
    architecture: str | None = Field(None, description="What the graph is, e.g. bigru or minilm (a record).")
    replacements: str | None = Field(
        None, description="A JSON file of the version: emoji and emoticons -> words, put in place of each "
        "before tokenising (service/pipelines/text_replacements.py); token offsets still refer to the text as "
        "sent. Absent: the text is tokenised as it is.")


class Limits(_Section):
    """Request sizes the model was built for; the pipelines refuse larger requests."""

    max_tokens: int | None = Field(
        None, ge=1, description="sentiment, classification: subword tokens per text; document: per sentence.")
    max_sentences: int | None = Field(None, ge=1, description="document: sentences per document.")
    max_words: int | None = Field(None, ge=1, description="ner: words per text.")
    max_subwords: int | None = Field(None, ge=1, description="ner: subwords per text.")
    max_source_tokens: int | None = Field(None, ge=1, description="translation: source subwords.")
    max_target_tokens: int | None = Field(None, ge=1, description="translation: output subwords.")
    max_history: int | None = Field(None, ge=1, description="recommendation: history items the graph reads.")
    max_k: int | None = Field(None, ge=1, description="recommendation: recommendations per call.")


class Languages(_Section):
    source: str = Field(description="Source language code (en).")
    target: str = Field(description="Target language code (fr).")


class Quantization(BaseModel):
    """How an int8 variant was made; `method` decides how it is batched, the rest are records."""

    model_config = ConfigDict(extra="allow", frozen=True)
    method: str = Field(description="quantize_dynamic variants run one request per run (per-batch scales).")


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ManifestModel(BaseModel):
    """manifest.json of one model version."""

    model_config = ConfigDict(extra="allow", frozen=True)

    format_version: Literal[1] = Field(description="The manifest format; this server reads format 1.")
    name: str = Field(min_length=1, description="The model name clients ask for; the folder's parent.")
    version: str = Field(pattern=r"^[0-9]+$", description="The version; the folder's name.")
    task: Literal["sentiment", "classification", "translation", "ner", "recommendation", "document"] = Field(
        description="Which task API serves it and which pipeline runs it.")
    files: dict[str, Sha256] = Field(description="Every file of the version -> its sha256, verified at load.")
    onnx: OnnxSection = Field(description="The graphs and their tensors.")
    description: str = Field("", description="What the model is, for people (GetModel shows it).")
    default_for_task: bool = Field(False, description="Served for its task when a call names no model.")
    variant: str | None = Field(None, description="int8 for a quantized variant of another model.")
    tokenizer: str | None = Field(None, description="A `tokenizers` tokenizer.json file.")
    special_tokens: SpecialTokens | None = Field(None, description="Token ids the pipeline pads and maps with.")
    labels: list[str] = Field(default_factory=list, description="Class or tag names, in output order.")
    limits: Limits = Field(default_factory=Limits, description="Request sizes the model was built for.")
    languages: Languages | None = Field(None, description="translation: the language pair.")
    decoding: DecodingSection | None = Field(None, description="translation: the step-graph contract.")
    ner: NerSection | None = Field(None, description="ner: the tagger and how text becomes words.")
    catalogue: CatalogueSection | None = Field(None, description="recommendation: the items.")
    classification: ClassificationSection | None = Field(
        None, description="classification: how text is encoded (absent: as the BiGRU, no special tokens).")
    quantization: Quantization | None = Field(None, description="int8 variants: how they were made.")
    sample_inputs: list[Any] = Field(default_factory=list, description="Inputs run once at load to warm up.")
    metrics: Record = Field(default_factory=dict, description="Measured quality (a record, shown by GetModel).")
    data: Record = Field(default_factory=dict, description="Data source, split and split hashes (a record).")
    training: Record = Field(default_factory=dict, description="Training config and history (a record).")


    @model_validator(mode="after")
    def _task_sections(self) -> ManifestModel:
        """Each task's pipeline needs its sections; a manifest without them is refused at load, not at
        the first call."""
        needed = TASK_SECTIONS[self.task]
        missing = [name for name in needed if not getattr(self, name)]
        if missing:
            raise ValueError(f"a {self.task} model needs {', '.join(missing)}")
        return self


# The sections each task's pipeline reads (beside onnx and files).
TASK_SECTIONS: dict[str, tuple[str, ...]] = {
    "sentiment": ("tokenizer", "special_tokens", "labels"),
    # Any label set of 2 or more; the graph gives probabilities and attention (pipelines/classification.py).
    "classification": ("tokenizer", "special_tokens", "labels"),
    "translation": ("tokenizer", "decoding"),
    "ner": ("ner", "labels"),
    "recommendation": ("catalogue",),
    # A hierarchical model over sentences (pipelines/document.py): labels for documents and sentences.
    "document": ("tokenizer", "special_tokens", "labels"),
}


def json_schema() -> dict[str, Any]:
    schema = ManifestModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "seqserve model version manifest (format 1)"
    return schema


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
