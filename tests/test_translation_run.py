"""The shared translation run (training/translation_run.py), on the real data with tiny models: both
architectures train, evaluate on dev with chrF/BLEU, leave a resumable checkpoint folder, and resume."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer

from training.data.translation import VersePair
from training.decoding import translate as translate_transformer
from training.decoding_seq2seq import translate as translate_seq2seq
from training.loop import LoopConfig
from training.models.seq2seq_attention import Seq2SeqAttention, Seq2SeqConfig
from training.models.transformer import Transformer, TransformerConfig
from training.tokenizer import train_joint_bpe
from training.translation_run import TranslationRecipe, dev_subset, run

ARCHITECTURES = {
    "transformer": (Transformer, TransformerConfig, translate_transformer,
                    {"d_model": 32, "num_heads": 2, "d_ff": 64, "encoder_layers": 1, "decoder_layers": 1}),
    "seq2seq": (Seq2SeqAttention, Seq2SeqConfig, translate_seq2seq,
                {"embedding_dim": 16, "encoder_hidden": 16, "decoder_hidden": 32, "attention_dim": 16}),
}


def small_tokenizer(checkpoint_dir: pathlib.Path, pairs: list[VersePair]) -> Tokenizer:
    path = checkpoint_dir / "tokenizer.json"
    if path.exists():
        return Tokenizer.from_file(str(path))
    texts = [t for p in pairs[:200] for t in (p.english, p.french)]
    tokenizer = train_joint_bpe(texts, vocab_size=300, min_frequency=1)
    tokenizer.save(str(path))
    return tokenizer


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_a_tiny_run_trains_evaluates_checkpoints_and_resumes(architecture: str, tmp_path: pathlib.Path) -> None:
    model_class, config_class, translate, model = ARCHITECTURES[architecture]
    cfg = SimpleNamespace(  # the shape of training/configs/translation_*.py, sized for seconds
        MODEL=model, MAX_WORDS_TRAIN=8, BATCH_TOKENS=300, LABEL_SMOOTHING=0.1, DEV_SUBSET=4, EVAL_BATCH=4,
        LOG_EVERY_STEPS=1,
        LOOP=LoopConfig(max_epochs=1, max_steps=2, metric="chrf", checkpoint_dir=str(tmp_path / "run"), threads=1),
    )
    recipe = TranslationRecipe(name=f"test-{architecture}", cfg=cfg, model_class=model_class,  # type: ignore[arg-type]
                               config_class=config_class, tokenizer=small_tokenizer,
                               tokenizer_setting={"vocab_size": 300}, translate=translate)
    torch.set_num_threads(1)
    run(recipe, [])
    checkpoint = tmp_path / "run"
    assert {"tokenizer.json", "model_config.json", "data.json", "training_config.json", "best.pt", "last.pt"} <= {
        p.name for p in checkpoint.iterdir()}
    best = torch.load(checkpoint / "best.pt", weights_only=False)["metrics"]
    assert {"chrf", "bleu", "train_loss", "train_tokens_per_s"} <= set(best)
    data = json.loads((checkpoint / "data.json").read_text())
    assert all(len(data[f"{part}_sha256"]) == 64 for part in ("train", "dev", "test"))  # the split is recorded
    assert json.loads((checkpoint / "training_config.json").read_text())["tokenizer"] == {"vocab_size": 300}

    # Same command with a larger step budget: resumes from last.pt (the same tokenizer and config).
    tokenizer_before = (checkpoint / "tokenizer.json").read_bytes()
    run(recipe, ["--max-steps", "3", "--max-epochs", "2"])
    assert (checkpoint / "tokenizer.json").read_bytes() == tokenizer_before
    assert torch.load(checkpoint / "last.pt", weights_only=False)["state"]["step"] == 3

    # A changed model config refuses to resume over the old checkpoint.
    changed = dataclasses.replace(recipe, cfg=SimpleNamespace(**{**vars(cfg), "MODEL": {**model, "dropout": 0.5}}))
    with pytest.raises(SystemExit, match="differs from training/configs"):
        run(changed, [])


def test_the_dev_subset_is_chosen_by_verse_not_by_order() -> None:
    pairs = [VersePair(1, 1, v, f"e{v}", f"f{v}") for v in range(1, 30)]
    assert dev_subset(pairs, 5) == dev_subset(list(reversed(pairs)), 5)
    assert len(dev_subset(pairs, 5)) == 5
