"""The encoder + decoder-step graphs of docs/translation-graphs.md, driven from numpy.

Architecture-agnostic: the manifest's `decoding` section says which encoder outputs are memory (fed
unchanged to every step) and which decoder inputs are state (`past_*` in, `present_*` out, with an
initial value from an encoder output or zeros). Greedy, beam search and streaming all go through
`StepRunner.encode` / `StepRunner.step`; reordering beams or dropping finished rows is one
`np.take(axis=0)` on every tensor, since all of them have batch on axis 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.model.loaded_model import LoadedModel
from service.model.manifest_schema import FromEncoderOutput, Zeros


@dataclass(frozen=True)
class DecoderState:
    """Everything the next step needs for a set of rows (sentences, or sentences x beams)."""

    src_mask: np.ndarray              # int64 [rows, src_len]
    memory: dict[str, np.ndarray]     # encoder outputs passed unchanged to every step
    state: dict[str, np.ndarray]      # past_<name> -> the value to feed next

    @property
    def rows(self) -> int:
        return int(self.src_mask.shape[0])

    def take(self, rows: np.ndarray) -> DecoderState:
        """Rows `rows` of every tensor: drops finished sentences (and reorders beams at the same time)."""
        return DecoderState(
            src_mask=np.take(self.src_mask, rows, axis=0),
            memory={k: np.take(v, rows, axis=0) for k, v in self.memory.items()},
            state={k: np.take(v, rows, axis=0) for k, v in self.state.items()},
        )

    def reorder(self, rows: np.ndarray) -> DecoderState:
        """Beam reorder inside unchanged sentences: only the state moves. The memory rows of one
        sentence's beams are identical copies, so the big memory tensors need not be copied."""
        return DecoderState(self.src_mask, self.memory, {k: np.take(v, rows, axis=0) for k, v in self.state.items()})


class StepRunner:
    def __init__(self, model: LoadedModel) -> None:
        decoding = model.manifest.spec.decoding
        if decoding is None:
            raise ValueError(f"model {model.name} has no decoding section")
        self.encoder = model.sessions[decoding.encoder]
        self.decoder = model.sessions[decoding.decoder]
        self.memory_names: list[str] = list(decoding.memory)
        self.state_names: dict[str, str] = dict(decoding.state)  # past_x -> present_x
        self.initial_state: dict[str, FromEncoderOutput | Zeros] = dict(decoding.initial_state)
        self.bos_id, self.eos_id = decoding.bos_id, decoding.eos_id
        self.pad_id = decoding.pad_id
        self.encoder_outputs = [o.name for o in self.encoder.get_outputs()]
        self.step_outputs = ["log_probs", "cross_attention", *self.state_names.values()]
        missing = set(self.memory_names) - set(self.encoder_outputs)
        if missing:
            raise ValueError(f"decoding.memory names {sorted(missing)} are not outputs of the encoder graph")

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> DecoderState:
        outputs = dict(zip(self.encoder_outputs, self.encoder.run(None, {"src_ids": src_ids, "src_mask": src_mask}),
                           strict=True))
        batch, src_len = src_ids.shape
        state = {}
        for past_name, init in self.initial_state.items():
            if isinstance(init, FromEncoderOutput):
                state[past_name] = outputs[init.encoder_output]
            else:  # zeros of a shape whose symbolic dims are the batch or source length
                sizes = {"batch": batch, "src_len": src_len}
                shape = [sizes[d] if isinstance(d, str) else int(d) for d in init.zeros]
                state[past_name] = np.zeros(shape, dtype=np.float32)
        return DecoderState(src_mask, {name: outputs[name] for name in self.memory_names}, state)

    def step(self, tokens: np.ndarray, current: DecoderState) -> tuple[np.ndarray, np.ndarray, DecoderState]:
        """Feed one token per row -> (log_probs [rows, vocab], cross_attention [rows, src_len], next state)."""
        feeds = {"token_ids": tokens.astype(np.int64), "src_mask": current.src_mask, **current.memory, **current.state}
        log_probs, attention, *present = self.decoder.run(self.step_outputs, feeds)
        state = dict(zip(self.state_names, present, strict=True))
        return log_probs, attention, DecoderState(current.src_mask, current.memory, state)
