"""HAN document model config: plain data, edited here, recorded in the manifest."""

from typing import Any

from training.configs.checkpoints import checkpoint_dir
from training.loop import LoopConfig

MODEL_NAME = "han-vader-docs"
# The committed sentiment model's tokenizer: the sentence baseline and the HAN read the same subwords.
TOKENIZER_FILE = "exported/sentiment-bigru/2/tokenizer.json"
# Keyword arguments of HanConfig.
MODEL: dict[str, Any] = {"embedding_dim": 128, "word_hidden_dim": 64, "sentence_hidden_dim": 64,
                         "attention_dim": 64, "dropout": 0.3}
MAX_SENTENCES = 96  # the longest document has 70 sentences
MAX_SENTENCE_TOKENS = 256  # as the sentiment model; the longest training sentence has ~200
BATCH_TOKEN_BUDGET = 6000  # documents x sentences x words of one step
SENTENCE_LOSS_WEIGHT = 1.0  # loss = document CE + this x sentence CE (sentence supervision)
# Movie snippets and tweets (not documents) train the sentence level as one-sentence documents, sentence
# loss only; their sentence-split train part, so no document sentence is among them. 0 turns it off.
EXTRA_SENTENCES_WEIGHT = 0.5
EXTRA_DOMAINS = ("movies", "tweets")
EXTRA_BATCH_SIZE = 32
LABEL_SMOOTHING = 0.05
LOOP = LoopConfig(
    max_epochs=12,
    learning_rate=2e-3,
    weight_decay=1e-4,
    warmup_steps=100,
    patience=4,
    metric="macro_f1",
    seed=13,
    threads=1,
    checkpoint_dir=checkpoint_dir("han-vader-docs"),
)
