"""The torch model of an exported translation version, with exactly the weights its ONNX graphs hold.

Benchmarks and converters (torch eager, CTranslate2) must run the same weights as the served graphs,
and a checkpoint folder moves on after an export: /work/checkpoints/translation-transformer/best.pt
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
    # The sinusoid table is a non-persistent buffer (derived from the config): checked, not loaded.
    table = parameters.pop("positions.table", None)
    if table is not None and not np.allclose(table, model.positions.table.numpy(), atol=1e-6):
        raise ValueError(f"{version_dir}: the graphs' sinusoid table is not the model's")
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in parameters.items()
                           if k in expected}, strict=True)
    return model.eval()


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


def load_torch_model(version_dir: pathlib.Path, checkpoint_dir: pathlib.Path | None = None) -> torch.nn.Module:
    """Transformer versions from their graphs; seq2seq versions from `checkpoint_dir`/best.pt (checked)."""
    training = _manifest(version_dir)["training"]
    if "TransformerConfig" in training:
        return transformer_from_graphs(version_dir)
    checkpoint_dir = checkpoint_dir or pathlib.Path(training["LoopConfig"]["checkpoint_dir"])
    return seq2seq_from_checkpoint(version_dir, checkpoint_dir / "best.pt")
