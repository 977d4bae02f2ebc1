"""torch's Elman RNN (nn.RNN, tanh) exported as the ONNX RNN operator with a dynamic sequence length.

nn.RNN does not export as is. onnxscript's torch library translates aten::gru and aten::lstm to ONNX
GRU/LSTM but has nothing for aten::rnn_tanh, so the exporter decomposes it into one MatMul/Tanh per
time step; and tracing aten::rnn_tanh specialises the sequence length to the example's (torch.export
says so outright: "You marked T as dynamic but your code specialized it to be a constant (7)";
torch.onnx.export went on, and the encoder traced at 7 source tokens failed in onnxruntime at any other
length with "GatherElements ... Out of range value in index tensor").

So for export only, `with_exportable_rnns` swaps every nn.RNN of a (copied) model for `ExportableElman`,
which runs each layer through the custom op seqserve::elman_layer: in torch it is torch.rnn_tanh (the
same kernel, the same numbers), to the tracer it is a shape-only fake (no specialisation), and
`RNN_TRANSLATIONS` (torch.onnx.export's custom_translation_table) writes it as one ONNX RNN node.
Training never sees any of this. Export parity (torch nn.RNN vs onnxruntime) checks the whole path.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from onnxscript import opset18 as op
from torch import nn


@torch.library.custom_op("seqserve::elman_layer", mutates_args=())
def elman_layer(x: torch.Tensor, initial: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                bias_ih: torch.Tensor, bias_hh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One Elman layer, batch first: x [B, T, I], initial [1, B, H] -> (states [B, T, H], final [1, B, H])."""
    states, final = torch.rnn_tanh(x, initial, [weight_ih, weight_hh, bias_ih, bias_hh], True, 1, 0.0, False,
                                   False, True)
    return states, final


@elman_layer.register_fake
def _elman_layer_shapes(x: torch.Tensor, initial: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                        bias_ih: torch.Tensor, bias_hh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = weight_hh.shape[1]
    return x.new_empty(x.shape[0], x.shape[1], hidden), initial.new_empty(initial.shape)


def _axes(*axes: int) -> Any:
    """A constant int64 axes input (Squeeze/Unsqueeze take axes as an input since opset 13)."""
    return op.Constant(value_ints=list(axes))


def elman_layer_onnx(x: Any, initial: Any, weight_ih: Any, weight_hh: Any, bias_ih: Any, bias_hh: Any
                     ) -> tuple[Any, Any]:
    """seqserve::elman_layer as ONNX RNN (default activation tanh), which reads time-major [T, B, I]."""
    bias = op.Unsqueeze(op.Concat(bias_ih, bias_hh, axis=0), _axes(0))  # [1, 2H]: input bias, recurrent bias
    states, final = op.RNN(op.Transpose(x, perm=[1, 0, 2]), op.Unsqueeze(weight_ih, _axes(0)),
                           op.Unsqueeze(weight_hh, _axes(0)), bias, None, initial, hidden_size=weight_hh.shape[1])
    return op.Transpose(op.Squeeze(states, _axes(1)), perm=[1, 0, 2]), final  # [T, 1, B, H] -> [B, T, H]


RNN_TRANSLATIONS: dict[Callable[..., Any], Callable[..., Any]] = {
    torch.ops.seqserve.elman_layer.default: elman_layer_onnx}


class ExportableElman(nn.Module):
    """An nn.RNN (tanh, batch first, one direction, with biases) computed layer by layer by elman_layer."""

    def __init__(self, rnn: nn.RNN) -> None:
        super().__init__()
        if rnn.nonlinearity != "tanh" or not rnn.batch_first or rnn.bidirectional or not rnn.bias:
            raise ValueError("only tanh, batch-first, one-direction nn.RNNs with biases are exported")
        self.rnn = rnn

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        rnn = self.rnn
        if hidden is None:
            hidden = x.new_zeros(rnn.num_layers, x.shape[0], rnn.hidden_size)
        finals = []
        for layer in range(rnn.num_layers):  # dropout between layers is off in eval mode
            x, final = elman_layer(x, hidden[layer : layer + 1], getattr(rnn, f"weight_ih_l{layer}"),
                                   getattr(rnn, f"weight_hh_l{layer}"), getattr(rnn, f"bias_ih_l{layer}"),
                                   getattr(rnn, f"bias_hh_l{layer}"))
            finals.append(final)
        return x, torch.cat(finals, dim=0)


def with_exportable_rnns(model: nn.Module) -> nn.Module:
    """A copy of `model` with every nn.RNN wrapped in ExportableElman (the model itself if it has none)."""
    if not any(isinstance(module, nn.RNN) for module in model.modules()):
        return model
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.RNN):
                setattr(parent, name, ExportableElman(child))
    return model
