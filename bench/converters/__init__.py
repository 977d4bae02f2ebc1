"""Conversions of exported translation versions that only the benchmark (section 4) and its tests use:
the torch model recovered from a version's graphs (`version_weights`), CTranslate2 (`ctranslate2_export`)
and onnxruntime's BeamSearch op (`beam_search_op`). They import training/ and onnx, never the V2 proto
(bench modules that do clash with tritonclient's in one pytest process)."""
