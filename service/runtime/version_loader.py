"""Open one version folder: verify its manifest and checksums, create a session per graph, read its
tokenizer. Refusals raise (ManifestError, onnxruntime or tokenizers errors); the registry's loader
turns them into one log line."""

from __future__ import annotations

import pathlib

from tokenizers import Tokenizer

from service.model.loaded_model import LoadedModel
from service.model.manifest import read_manifest, verify_checksums
from service.runtime.onnx_session import create_session


def load_version(
    version_dir: pathlib.Path, intra_op_threads: int = 1, allow_spinning: bool = False
) -> LoadedModel:
    manifest = read_manifest(version_dir)
    verify_checksums(manifest)
    onnx_file = manifest.spec.onnx.file
    session = create_session(
        manifest.path(onnx_file), intra_op_threads=intra_op_threads, allow_spinning=allow_spinning
    )
    sessions = {onnx_file: session}
    # Further graphs: those the manifest lists, and a translation model's encoder/decoder-step pair.
    decoding = manifest.spec.decoding
    graph_files = [*manifest.spec.onnx.graphs, *((decoding.encoder, decoding.decoder) if decoding else ())]
    for graph_file in graph_files:
        if graph_file not in sessions:
            sessions[graph_file] = create_session(
                manifest.path(graph_file), intra_op_threads=intra_op_threads, allow_spinning=allow_spinning
            )
    tokenizer_file = manifest.spec.tokenizer
    tokenizer = Tokenizer.from_file(str(manifest.path(tokenizer_file))) if tokenizer_file else None
    return LoadedModel(manifest=manifest, session=session, tokenizer=tokenizer, sessions=sessions)
