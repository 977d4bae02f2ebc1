"""A tiny randomly initialised Transformer (and a tiny ConvS2S), trained tokenizer and all, exported through
the real export command: the translation tests run on it in seconds (the committed model takes ~40 MB and
minutes)."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import torch

from training.export.half_storage import round_weights_to_half
from training.export.translation_transformer import export_version
from training.models.convs2s import ConvS2S, ConvS2SConfig
from training.models.transformer import Transformer, TransformerConfig
from training.tokenizer import BOS, EOS, PAD, train_joint_bpe

REPO = pathlib.Path(__file__).resolve().parents[1]

CORPUS = [
    "In the beginning, God created the heavens and the earth.",
    "Au commencement, Dieu créa les cieux et la terre.",
    "The earth was formless and empty. Darkness was on the surface of the deep.",
    "La terre était informe et vide: il y avait des ténèbres à la surface de l'abîme.",
    "God said, \"Let there be light,\" and there was light.",
    "Dieu dit: Que la lumière soit! Et la lumière fut.",
    "Jesus wept.",
]


def tiny_checkpoint(directory: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """A checkpoint folder laid out as training/train_translation.py writes it."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_joint_bpe(CORPUS * 3, vocab_size=120, min_frequency=1)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = TransformerConfig(vocab_size=tokenizer.get_vocab_size(), d_model=16, num_heads=2, d_ff=32,
                               encoder_layers=2, decoder_layers=2, dropout=0.0,
                               pad_id=tokenizer.token_to_id(PAD), bos_id=tokenizer.token_to_id(BOS),
                               eos_id=tokenizer.token_to_id(EOS))
    torch.manual_seed(seed)
    model = Transformer(config)
    # With tied embeddings a random model just repeats its input token; a random output LayerNorm
    # spreads its choices, so the searches below have real decisions to make.
    with torch.no_grad():
        model.decoder_norm.weight.copy_(torch.randn(config.d_model) * 3)
        model.decoder_norm.bias.copy_(torch.randn(config.d_model) * 3)
    (directory / "model_config.json").write_text(json.dumps(dataclasses.asdict(config)))
    torch.save({"model": model.state_dict(), "metrics": {"chrf": 0.0}}, directory / "best.pt")
    (directory / "history.json").write_text(json.dumps([{"seconds": 1.0, "chrf": 0.0, "bleu": 0.0}]))
    return directory


def tiny_model_dir(root: pathlib.Path) -> pathlib.Path:
    """`root/models`: a model directory holding the tiny model as `transformer/1`."""
    export_version(tiny_checkpoint(root / "checkpoint"), root / "models" / "transformer" / "1")
    return root / "models"


def load_tiny_model(version_dir: pathlib.Path) -> Transformer:
    checkpoint = version_dir.parents[2] / "checkpoint"
    config = TransformerConfig(**json.loads((checkpoint / "model_config.json").read_text()))
    model = Transformer(config)
    model.load_state_dict(torch.load(checkpoint / "best.pt", weights_only=False)["model"])
    return model.eval()


def tiny_convs2s_checkpoint(directory: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """A tiny random ConvS2S checkpoint laid out as training/train_convs2s.py writes it."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_joint_bpe(CORPUS * 3, vocab_size=120, min_frequency=1)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = ConvS2SConfig(vocab_size=tokenizer.get_vocab_size(), embedding_dim=16, channels=24, encoder_layers=2,
                           decoder_layers=2, dropout=0.0, pad_id=tokenizer.token_to_id(PAD),
                           bos_id=tokenizer.token_to_id(BOS), eos_id=tokenizer.token_to_id(EOS))
    torch.manual_seed(seed)
    model = ConvS2S(config)
    # A random output bias spreads the choices (tied embeddings alone mostly echo the input token), so
    # greedy and beam search have real decisions to make.
    with torch.no_grad():
        model.output_bias.copy_(torch.randn(config.vocab_size))
    (directory / "model_config.json").write_text(json.dumps(dataclasses.asdict(config)))
    torch.save({"model": model.state_dict(), "metrics": {"chrf": 0.0}}, directory / "best.pt")
    (directory / "history.json").write_text(json.dumps([{"seconds": 1.0, "chrf": 0.0, "bleu": 0.0}]))
    return directory


def tiny_convs2s_model_dir(root: pathlib.Path) -> pathlib.Path:
    """`root/models` holding a tiny ConvS2S as `convs2s/1`, exported by the real command in a process of
    its own (as for seq2seq, docs/translation-graphs.md "Export in a fresh process")."""
    checkpoint = tiny_convs2s_checkpoint(root / "checkpoint")
    subprocess.run([sys.executable, "-m", "training.export.translation_convs2s", "--checkpoint", str(checkpoint),
                    "--out", str(root / "models" / "convs2s" / "1")], check=True, cwd=REPO,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=900)
    return root / "models"


def load_tiny_convs2s(models: pathlib.Path) -> ConvS2S:
    """The torch model behind `tiny_convs2s_model_dir`, with the float16-rounded weights it was exported with."""
    checkpoint = models.parent / "checkpoint"
    model = ConvS2S(ConvS2SConfig(**json.loads((checkpoint / "model_config.json").read_text())))
    model.load_state_dict(torch.load(checkpoint / "best.pt", weights_only=False)["model"])
    round_weights_to_half(model)
    return model.eval()
