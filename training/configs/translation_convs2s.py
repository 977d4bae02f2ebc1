"""ConvS2S translation (English -> French) config: plain data, edited here, recorded beside the checkpoint.

Shape: fairseq's fconv_iwslt_de_en (embeddings 256, encoder 4 x (256, kernel 3), decoder 3 x (256,
kernel 3), every decoder layer attending), with the joint 8k vocabulary in one tied table as the other
two translators; sized to train in ~75 minutes on one shared core (docs/translation.md, "ConvS2S").
Same data, split, length filter, dev subset and tokenizer as the Transformer and the GRU, so the three
curves and test scores compare directly.
"""

from training.configs.checkpoints import REPO, checkpoint_dir
from training.data.translation import MAX_WORDS
from training.loop import LoopConfig

MODEL_NAME = "convs2s"
MAX_WORDS_TRAIN = MAX_WORDS  # the Transformer's filter: same data, same split
# The joint BPE the Transformer trained, as committed with it (byte-identical to the seq2seq model's copy):
# copied beside this checkpoint on the first run, so the three models read the same ids.
SHARED_TOKENIZER = str(REPO / "exported" / "transformer" / "1" / "tokenizer.json")
MODEL = {"embedding_dim": 256, "channels": 256, "encoder_layers": 4, "encoder_kernel": 3, "decoder_layers": 3,
         "decoder_kernel": 3, "dropout": 0.2, "max_positions": 256}
BATCH_TOKENS = 3000  # padded target tokens per batch, as the GRU run
LABEL_SMOOTHING = 0.1
DEV_SUBSET = 300  # the Transformer's fixed dev verses (same hash order), greedy-decoded each evaluation
EVAL_BATCH = 50
LOG_EVERY_STEPS = 50
LOOP = LoopConfig(
    max_epochs=30,
    learning_rate=1e-3,
    weight_decay=1e-4,
    warmup_steps=300,
    lr_schedule="inverse_sqrt",
    grad_clip=1.0,
    patience=3,  # epochs without a better dev chrF
    metric="chrf",
    seed=13,
    threads=1,
    checkpoint_dir=checkpoint_dir("translation-convs2s"),  # SEQSERVE_CHECKPOINTS: keep it outside the clone
    evaluate_every_steps=500,  # besides each epoch's end: a curve point and a resumable checkpoint
)
