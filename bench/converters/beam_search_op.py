"""An exported Transformer version wrapped in onnxruntime's com.microsoft.BeamSearch op (T5 contract):
the whole beam search runs inside onnxruntime, for the speed comparison of issue 3 (bench section 4).

    python -m bench.converters.beam_search_op exported/transformer/1 --out .cache/beamsearch/transformer-1

The op wants two subgraphs with fixed names and int32 ids (onnxruntime/contrib_ops/cpu/transformers/
subgraph_t5_encoder.cc and subgraph_t5_decoder.cc):

- encoder (its "old format", which also runs the first decoder step):
  encoder_input_ids, encoder_attention_mask, decoder_input_ids (int32)
  -> logits [B, 1, V], encoder_hidden_states, present_key_self_i / present_value_self_i [B, H, 1, d],
     present_key_cross_i / present_value_cross_i [B, H, S, d];
- decoder: input_ids [B, 1], encoder_attention_mask, past_key_self_i, past_value_self_i, ...,
  past_key_cross_i, past_value_cross_i, ... -> logits [B, 1, V], present_key_self_i, present_value_self_i.

Both are built from our two graphs unchanged (names prefixed, ids cast to int64, the first step fed a
zero-length self-attention cache, log-probs given an axis): the same weights and arithmetic as the
served pipeline. "logits" are our log-probs; the op's log-softmax of them is the same numbers. What differs
is the search's scoring: the op ranks finished hypotheses by sum of log-probs / length ** alpha (HF), ours by
the GNMT penalty, and it has one maximum length per batch. Converted models stay in .cache/ (not in git).
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from training.export.translation_graphs import memory_names, state_names

MS_DOMAIN = "com.microsoft"


def _op(name: str) -> str:
    """Our state/memory name -> the op's: self_key_0 -> key_self_0, cross_value_2 -> value_cross_2."""
    kind, role, index = name.split("_")
    return f"{role}_{kind}_{index}"


def _prefixed(path: pathlib.Path, prefix: str) -> onnx.ModelProto:
    return compose.add_prefix(onnx.load(str(path)), prefix)


def _inlined(model: onnx.ModelProto) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    return list(model.graph.node), list(model.graph.initializer)


def _float(name: str, shape: list[str | int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _int32(name: str, shape: list[str | int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.INT32, shape)


def _step_nodes(prefix: str, token_source: str, mask_source: str, layers: int) -> list[onnx.NodeProto]:
    """int32 [B, 1] ids and int32 mask -> the step graph's token_ids [B] and src_mask (int64)."""
    return [
        helper.make_node("Cast", [token_source], [f"{prefix}ids64"], to=TensorProto.INT64),
        helper.make_node("Squeeze", [f"{prefix}ids64", "axis_1"], [f"{prefix}token_ids"]),
        helper.make_node("Cast", [mask_source], [f"{prefix}src_mask"], to=TensorProto.INT64),
    ]


def decoder_subgraph(version_dir: pathlib.Path, layers: int, heads: int, d_head: int, vocab: int) -> onnx.GraphProto:
    step = _prefixed(version_dir / "decoder_step.onnx", "d_")
    nodes, initializers = _inlined(step)
    selfs, cross = state_names(layers), memory_names(layers)
    # Our names -> the op's names: self_key_i -> past_key_self_i, cross_key_i -> past_key_cross_i.
    renames = [helper.make_node("Identity", [f"past_{_op(n)}"],
                                [f"d_past_{n}"]) for n in selfs]
    renames += [helper.make_node("Identity", [f"past_{_op(n)}"],
                                 [f"d_{n}"]) for n in cross]
    outputs = [helper.make_node("Unsqueeze", ["d_log_probs", "axis_1"], ["logits"])]
    outputs += [helper.make_node("Identity", [f"d_present_{n}"], [f"present_{_op(n)}"])
                for n in selfs]
    graph_nodes = [*_step_nodes("d_", "input_ids", "encoder_attention_mask", layers), *renames, *nodes, *outputs]
    axis = numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1")
    past = [_float(f"past_{_op(n)}", ["batch", heads, "past", d_head])
            for n in selfs]
    past += [_float(f"past_{_op(n)}", ["batch", heads, "src_len", d_head])
             for n in cross]
    return helper.make_graph(
        graph_nodes, "decoder",
        [_int32("input_ids", ["batch", 1]), _int32("encoder_attention_mask", ["batch", "src_len"]), *past],
        [_float("logits", ["batch", 1, vocab]),
         *(_float(f"present_{_op(n)}", ["batch", heads, "past_plus_1", d_head])
           for n in selfs)],
        [*initializers, axis],
    )


def encoder_subgraph(version_dir: pathlib.Path, layers: int, heads: int, d_head: int, vocab: int) -> onnx.GraphProto:
    encoder = _prefixed(version_dir / "encoder.onnx", "e_")
    step = _prefixed(version_dir / "decoder_step.onnx", "d_")
    (enc_nodes, enc_init), (dec_nodes, dec_init) = _inlined(encoder), _inlined(step)
    selfs, cross = state_names(layers), memory_names(layers)
    nodes = [
        helper.make_node("Cast", ["encoder_input_ids"], ["e_src_ids"], to=TensorProto.INT64),
        helper.make_node("Cast", ["encoder_attention_mask"], ["e_src_mask"], to=TensorProto.INT64),
        *enc_nodes,
        *_step_nodes("d_", "decoder_input_ids", "encoder_attention_mask", layers),
        # A zero-length self-attention cache [B, heads, 0, d_head] for the first step.
        helper.make_node("Shape", ["encoder_input_ids"], ["batch_shape"], start=0, end=1),
        helper.make_node("Concat", ["batch_shape", "cache_tail"], ["empty_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["empty_shape"], ["empty_cache"],
                         value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])),
        *(helper.make_node("Identity", ["empty_cache"], [f"d_past_{n}"]) for n in selfs),
        *(helper.make_node("Identity", [f"e_{n}"], [f"d_{n}"]) for n in cross),
        *dec_nodes,
        helper.make_node("Unsqueeze", ["d_log_probs", "axis_1"], ["logits"]),
        # The op wants this output; the decoder subgraph does not read it (it takes no hidden states).
        helper.make_node("Cast", ["encoder_attention_mask"], ["mask_float"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_float", "axis_2"], ["encoder_hidden_states"]),
        *(helper.make_node("Identity", [f"d_present_{n}"], [f"present_{_op(n)}"])
          for n in selfs),
        *(helper.make_node("Identity", [f"e_{n}"], [f"present_{_op(n)}"])
          for n in cross),
    ]
    constants = [numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"),
                 numpy_helper.from_array(np.array([2], dtype=np.int64), "axis_2"),
                 numpy_helper.from_array(np.array([heads, 0, d_head], dtype=np.int64), "cache_tail")]
    outputs = [_float("logits", ["batch", 1, vocab]), _float("encoder_hidden_states", ["batch", "src_len", 1]),
               *(_float(f"present_{_op(n)}", ["batch", heads, 1, d_head])
                 for n in selfs),
               *(_float(f"present_{_op(n)}",
                        ["batch", heads, "src_len", d_head]) for n in cross)]
    return helper.make_graph(
        nodes, "encoder", [_int32("encoder_input_ids", ["batch", "src_len"]),
                           _int32("encoder_attention_mask", ["batch", "src_len"]),
                           _int32("decoder_input_ids", ["batch", 1])],
        outputs, [*enc_init, *dec_init, *constants],
    )


def build(version_dir: pathlib.Path) -> onnx.ModelProto:
    manifest = json.loads((version_dir / "manifest.json").read_text("utf-8"))
    config, decoding = manifest["training"]["TransformerConfig"], manifest["decoding"]
    layers, heads = config["decoder_layers"], config["num_heads"]
    d_head, vocab = config["d_model"] // heads, config["vocab_size"]
    node = helper.make_node(
        "BeamSearch",
        ["input_ids", "max_length", "min_length", "num_beams", "num_return_sequences", "length_penalty",
         "repetition_penalty", "", "", "attention_mask"],
        ["sequences", "sequences_scores"], domain=MS_DOMAIN,
        decoder_start_token_id=int(decoding["bos_id"]), eos_token_id=int(decoding["eos_id"]),
        pad_token_id=int(decoding["pad_id"]), model_type=1, early_stopping=0, no_repeat_ngram_size=0,
        encoder=encoder_subgraph(version_dir, layers, heads, d_head, vocab),
        decoder=decoder_subgraph(version_dir, layers, heads, d_head, vocab),
    )
    scalar_int = [_int32(n, [1]) for n in ("max_length", "min_length", "num_beams", "num_return_sequences")]
    graph = helper.make_graph(
        [node], "beam_search",
        [_int32("input_ids", ["batch", "src_len"]), *scalar_int,
         _float("length_penalty", [1]), _float("repetition_penalty", [1]),
         _int32("attention_mask", ["batch", "src_len"])],
        [_int32("sequences", ["batch", "num_return_sequences", "max_length"]),
         _float("sequences_scores", ["batch", "num_return_sequences"])],
    )
    opset = onnx.load(str(version_dir / "encoder.onnx"), load_external_data=False).opset_import
    model = helper.make_model(graph, opset_imports=[*opset, helper.make_opsetid(MS_DOMAIN, 1)])
    return model


def build_version(version_dir: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "beam_search.onnx"
    onnx.save(build(version_dir), str(path))
    manifest = json.loads((version_dir / "manifest.json").read_text("utf-8"))
    (out_dir / "source.json").write_text(json.dumps({"files": manifest["files"]}))
    return path


class BeamSearchOp:
    """A session on the op model of one version (built into `cache_root` on first use, per its checksums)."""

    def __init__(self, version_dir: pathlib.Path, cache_root: pathlib.Path, threads: int) -> None:
        import onnxruntime as ort

        manifest = json.loads((version_dir / "manifest.json").read_text("utf-8"))
        out_dir = cache_root / f"{manifest['name']}-{manifest['version']}"
        source = out_dir / "source.json"
        fresh = source.exists() and json.loads(source.read_text())["files"] == manifest["files"]
        path = out_dir / "beam_search.onnx" if fresh else build_version(version_dir, out_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        decoding = manifest["decoding"]
        self.special = {int(decoding[k]) for k in ("bos_id", "eos_id", "pad_id")}

    def translate(self, sources: list[list[int]], beam: int, max_steps: int, alpha: float = 0.6) -> list[list[int]]:
        """Best hypothesis ids per source (source ids end with [EOS]), without [BOS]/[EOS]/padding."""
        width = max(len(s) for s in sources)
        ids = np.zeros((len(sources), width), dtype=np.int32)
        mask = np.zeros_like(ids)
        for row, source in enumerate(sources):
            ids[row, : len(source)], mask[row, : len(source)] = source, 1
        feeds = {"input_ids": ids, "attention_mask": mask,
                 "max_length": np.array([max_steps + 1], np.int32),  # + the decoder start token
                 "min_length": np.array([1], np.int32), "num_beams": np.array([beam], np.int32),
                 "num_return_sequences": np.array([1], np.int32),
                 "length_penalty": np.array([alpha], np.float32), "repetition_penalty": np.array([1.0], np.float32)}
        sequences = self.session.run(["sequences"], feeds)[0]
        return [[int(t) for t in row[0] if int(t) not in self.special] for row in sequences]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dir", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args()
    print(build_version(args.version_dir, args.out))


if __name__ == "__main__":
    main()
