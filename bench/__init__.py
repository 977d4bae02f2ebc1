"""seqserve's benchmark harness: `python -m bench run [--quick]` writes docs/benchmarks.md and its plots.

The server runs as its own process (as in production), the load client in another
(`bench/loadgen.py`), and the in-process onnxruntime baseline in the orchestrating process; every
figure is a ratio of two configurations measured side by side, interleaved, in the same run.
"""
