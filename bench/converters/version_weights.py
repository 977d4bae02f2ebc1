"""The torch model of an exported translation version, with exactly the weights its ONNX graphs hold.

Benchmarks and converters (torch eager, CTranslate2) must run the same weights as the served graphs,
and a checkpoint folder moves on after an export: the translation-transformer run's best.pt
was at step 1,500 when `transformer` version 1 (step 1,250) was already published. So the Transformer
is rebuilt from the graphs themselves:

- the dynamo exporter keeps parameter names for initializers it uses as they are (`model.<name>`:
  embeddings, layer norms, biases, the sinusoid table);
- each nn.Linear weight becomes an anonymous, pre-transposed constant feeding a MatMul whose result
  goes into an Add with the layer's named bias: that Add names the weight (`<layer>.bias` ->
  `<layer>.weight`, transposed back).

The state dict must then load with strict=True, and a tensor found in both graphs (the shared
embedding) must be identical in both. The seq2seq model's GRU weights are re-packed by the exporter
(gate order, fused biases), so that one comes from its checkpoint instead, accepted only if every
named parameter in its graphs equals the checkpoint's.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from training.configs.checkpoints import recorded_checkpoint_dir
from training.models.seq2seq_attention import Seq2SeqAttention, Seq2SeqConfig
from training.models.transformer import Transformer, TransformerConfig

PREFIX = "model."  # the graphs wrap the model as `self.model`


def _manifest(version_dir: pathlib.Path) -> dict[str, Any]:
    return json.loads((version_dir / "manifest.json").read_text("utf-8"))


def _graphs(version_dir: pathlib.Path) -> Iterator[onnx.ModelProto]:
    for name in sorted(_manifest(version_dir)["onnx"]["graphs"]):
        yield onnx.load(str(version_dir / name))


def graph_parameters(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Parameter name -> value of one graph: named initializers, and Linear weights named by their bias."""
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    found = {name[len(PREFIX):]: value for name, value in initializers.items() if name.startswith(PREFIX)}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in model.graph.node:
        weights = [name for name in node.input if name in initializers and not name.startswith(PREFIX)]
        if node.op_type != "MatMul" or len(weights) != 1:
            continue
        for add in consumers.get(node.output[0], []):
            biases = [name for name in add.input if name.startswith(PREFIX) and name.endswith(".bias")]
            if add.op_type == "Add" and len(biases) == 1:
                found[biases[0][len(PREFIX): -len(".bias")] + ".weight"] = initializers[weights[0]].T
    return found


def transformer_from_graphs(version_dir: pathlib.Path) -> Transformer:
    """The version's Transformer (eval mode), rebuilt from its encoder and decoder-step graphs."""
    config = TransformerConfig(**_manifest(version_dir)["training"]["TransformerConfig"])
    parameters: dict[str, np.ndarray] = {}
    for graph in _graphs(version_dir):
        for name, value in graph_parameters(graph).items():
            if name in parameters and not np.array_equal(parameters[name], value):
                raise ValueError(f"{name} differs between the graphs of {version_dir}")
            parameters[name] = value
    model = Transformer(config)
    expected = set(model.state_dict())
    missing = expected - set(parameters)
    if missing:
        raise ValueError(f"{version_dir}: no weights for {sorted(missing)[:5]} in its graphs")
    # The sinusoid table is a non-persistent buffer (derived from the config): checked against the
    # config, then taken from the graphs, so the torch model adds exactly what the served graphs add.
    table = parameters.pop("positions.table", None)
    if table is not None:
        check_sinusoid_table(table, version_dir)
        model.positions.table.copy_(torch.from_numpy(np.array(table, dtype=np.float32, copy=True)))
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in parameters.items()
                           if k in expected}, strict=True)
    return model.eval()


def check_sinusoid_table(table: np.ndarray, version_dir: pathlib.Path) -> None:
    """Refuse a graph whose position table is not the sinusoid table of its shape.

    A table exported in float32 on one CPU differs from one computed on another by up to 3e-5 (float32
    sin/cos of arguments up to max_positions, rounded differently by AVX-512 and AVX2 math kernels), so
    it is compared with a float64 reference at a tolerance that covers float32 evaluation anywhere: the
    argument pos * freq is rounded to float32 (relative error 2^-24, so absolute max_positions * 2^-24),
    and sin/cos are within a few float32 ulps. A table from another config (other positions or width,
    or cos and sin swapped) is off by order 1.
    """
    positions, width = table.shape
    position = np.arange(positions, dtype=np.float64)[:, None]
    frequency = np.exp(np.arange(0, width, 2, dtype=np.float64) * (-np.log(10000.0) / width))
    reference = np.zeros((positions, width), dtype=np.float64)
    reference[:, 0::2] = np.sin(position * frequency)
    reference[:, 1::2] = np.cos(position * frequency)
    tolerance = 4 * positions * 2.0**-24 + 1e-6
    worst = float(np.abs(table.astype(np.float64) - reference).max())
    if worst > tolerance:
        raise ValueError(f"{version_dir}: the graphs' sinusoid table is not a sinusoid table "
                         f"(off by {worst:.3g}, tolerance {tolerance:.3g})")


def seq2seq_from_checkpoint(version_dir: pathlib.Path, checkpoint: pathlib.Path) -> Seq2SeqAttention:
    """The version's seq2seq model from a checkpoint file, if that file holds the exported weights."""
    config = Seq2SeqConfig(**_manifest(version_dir)["training"]["Seq2SeqConfig"])
    model = Seq2SeqAttention(config)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"])
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    compared = 0
    for graph in _graphs(version_dir):
        for name, value in graph_parameters(graph).items():
            if name in state and state[name].shape == value.shape:
                if not np.array_equal(state[name], value):
                    raise ValueError(f"{checkpoint} is not the checkpoint of {version_dir}: {name} differs")
                compared += 1
    if compared < 3:
        raise ValueError(f"too few named parameters in the graphs of {version_dir} to check {checkpoint}")
    return model.eval()


def torch_weights_source(version_dir: pathlib.Path, checkpoint_dir: pathlib.Path | None = None) -> pathlib.Path:
    """Where load_torch_model reads the version's weights: its own folder (Transformer) or the training
    checkpoint (seq2seq), which a fresh clone does not have (it stays on the machine that trained it, or is
    copied under the checkpoint root: training/configs/checkpoints.py)."""
    training = _manifest(version_dir)["training"]
    if "TransformerConfig" in training:
        return version_dir
    return (checkpoint_dir or recorded_checkpoint_dir(training["LoopConfig"]["checkpoint_dir"])) / "best.pt"


def load_torch_model(version_dir: pathlib.Path, checkpoint_dir: pathlib.Path | None = None) -> torch.nn.Module:
    """Transformer versions from their graphs; seq2seq versions from `checkpoint_dir`/best.pt (checked)."""
    source = torch_weights_source(version_dir, checkpoint_dir)
    if source == version_dir:
        return transformer_from_graphs(version_dir)
    return seq2seq_from_checkpoint(version_dir, source)
