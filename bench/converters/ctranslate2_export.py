"""Our Transformer as a CTranslate2 model: `ctranslate2.specs.TransformerSpec` filled from the state dict.

    python -m bench.converters.ctranslate2_export exported/transformer/1 --out .cache/ct2/transformer-1

The template is CTranslate2's own OpenNMT-py converter (ctranslate2/converters/opennmt_py.py): same
spec, our parameter names. What has to match our model (training/models/transformer.py):

- pre-LayerNorm layers with a final LayerNorm on both stacks (`pre_norm=True`), ReLU FFN, 4 heads;
  torch's LayerNorm epsilon 1e-5 (CTranslate2 would assume 1e-6);
- one matrix for source embeddings, target embeddings and the output projection (no output bias);
  CTranslate2 aliases identical arrays, so it is stored once;
- inputs scaled by sqrt(d_model) (`scale_embeddings`, CTranslate2's default, as ours);
- positions: our sinusoid table interleaves sin/cos over the dimensions (even = sin, odd = cos), while
  CTranslate2's built-in table puts all sines first; so the table is given explicitly, as the
  OpenNMT-py converter does with its `pe` buffer;
- self-attention Q, K, V fused into one linear (in that order); cross-attention Q alone and K, V fused;
- vocabulary: the joint BPE's tokens by id; [BOS] starts the decoder and [EOS] ends it; the source
  gets [EOS] appended by CTranslate2 itself (`add_source_eos`), as our pipeline appends it.

The weights come from the exported graphs (bench/converters/version_weights.py), so the converted model
is the served version exactly. Converted models are build outputs: keep them in .cache/ (not in git).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil

import numpy as np
import torch
from ctranslate2.converters import utils
from ctranslate2.converters.converter import Converter
from ctranslate2.specs import attention_spec, common_spec, transformer_spec
from tokenizers import Tokenizer

from bench.converters.version_weights import transformer_from_graphs
from training.models.transformer import Transformer

LAYER_NORM_EPSILON = 1e-5  # torch.nn.LayerNorm's default, which our model uses


class OurTransformerConverter(Converter):
    def __init__(self, model: Transformer, tokenizer: Tokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer

    def _load(self) -> transformer_spec.TransformerSpec:
        config = self.model.config
        weights = {k: v.detach().numpy() for k, v in self.model.state_dict().items()}
        spec = transformer_spec.TransformerSpec.from_config(
            (config.encoder_layers, config.decoder_layers), config.num_heads, pre_norm=True,
            activation=common_spec.Activation.RELU,
        )
        spec.config.layer_norm_epsilon = LAYER_NORM_EPSILON
        tokens = [self.tokenizer.id_to_token(i) for i in range(config.vocab_size)]
        spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = tokens[1], tokens[2], tokens[3]
        spec.config.decoder_start_token = tokens[config.bos_id]
        spec.config.add_source_eos = True
        table = self.model.positions.table.numpy()
        for stack, embeddings in ((spec.encoder, spec.encoder.embeddings[0]), (spec.decoder, spec.decoder.embeddings)):
            embeddings.weight = weights["embedding.weight"]
            stack.scale_embeddings = True
            stack.position_encodings.encodings = table
        spec.decoder.projection.weight = weights["embedding.weight"]
        _layer_norm(spec.encoder.layer_norm, weights, "encoder_norm")
        _layer_norm(spec.decoder.layer_norm, weights, "decoder_norm")
        for i, layer in enumerate(spec.encoder.layer):
            scope = f"encoder_layers.{i}"
            _attention(layer.self_attention, weights, f"{scope}.self_attention", self_attention=True)
            _layer_norm(layer.self_attention.layer_norm, weights, f"{scope}.self_attention_norm")
            _feed_forward(layer.ffn, weights, scope)
        for i, layer in enumerate(spec.decoder.layer):
            scope = f"decoder_layers.{i}"
            _attention(layer.self_attention, weights, f"{scope}.self_attention", self_attention=True)
            _layer_norm(layer.self_attention.layer_norm, weights, f"{scope}.self_attention_norm")
            _attention(layer.attention, weights, f"{scope}.cross_attention", self_attention=False)
            _layer_norm(layer.attention.layer_norm, weights, f"{scope}.cross_attention_norm")
            _feed_forward(layer.ffn, weights, scope)
        spec.register_source_vocabulary(tokens)
        spec.register_target_vocabulary(tokens)
        return spec


def _linear(spec: common_spec.LinearSpec, weights: dict[str, np.ndarray], scope: str) -> None:
    spec.weight = weights[f"{scope}.weight"]  # [out, in], as CTranslate2 wants it
    spec.bias = weights[f"{scope}.bias"]


def _layer_norm(spec: common_spec.LayerNormSpec, weights: dict[str, np.ndarray], scope: str) -> None:
    spec.gamma, spec.beta = weights[f"{scope}.weight"], weights[f"{scope}.bias"]


def _attention(spec: attention_spec.MultiHeadAttentionSpec, weights: dict[str, np.ndarray], scope: str,
               self_attention: bool) -> None:
    def split(name: str) -> common_spec.LinearSpec:
        linear = common_spec.LinearSpec()
        _linear(linear, weights, f"{scope}.{name}")
        return linear

    if self_attention:
        utils.fuse_linear(spec.linear[0], [split("query"), split("key"), split("value")])
    else:
        _linear(spec.linear[0], weights, f"{scope}.query")
        utils.fuse_linear(spec.linear[1], [split("key"), split("value")])
    _linear(spec.linear[-1], weights, f"{scope}.output")


def _feed_forward(spec: transformer_spec.FeedForwardSpec, weights: dict[str, np.ndarray], scope: str) -> None:
    _layer_norm(spec.layer_norm, weights, f"{scope}.feed_forward_norm")
    _linear(spec.linear_0, weights, f"{scope}.feed_forward.expand")
    _linear(spec.linear_1, weights, f"{scope}.feed_forward.contract")


def convert_version(version_dir: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    """Write the CTranslate2 model of an exported Transformer version (fp32 weights; int8 is chosen at
    load time with compute_type="int8"). Returns out_dir."""
    model = transformer_from_graphs(version_dir)
    tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer.json"))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    OurTransformerConverter(model, tokenizer).convert(str(out_dir), quantization=None, force=True)
    manifest = json.loads((version_dir / "manifest.json").read_text("utf-8"))
    (out_dir / "source.json").write_text(json.dumps(
        {"name": manifest["name"], "version": manifest["version"], "files": manifest["files"]}, indent=1))
    return out_dir


def converted_model(version_dir: pathlib.Path, cache_root: pathlib.Path) -> pathlib.Path:
    """The converted model for this exact version (by its files' checksums), converting if needed."""
    manifest = json.loads((version_dir / "manifest.json").read_text("utf-8"))
    out_dir = cache_root / f"{manifest['name']}-{manifest['version']}"
    source = out_dir / "source.json"
    if source.exists() and json.loads(source.read_text())["files"] == manifest["files"]:
        return out_dir
    return convert_version(version_dir, out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dir", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(convert_version(args.version_dir, args.out))


if __name__ == "__main__":
    main()
