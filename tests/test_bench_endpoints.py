"""The benchmark's endpoint plug-ins exist for every committed task model.

A factory answers None only when its task has no API or no exported model; an import that moved must
not pass for that (the translation endpoint imported decode_options from the servicer it left, and the
benchmark quietly measured no translation at all).
"""

from __future__ import annotations

import pytest
from exported_models import EXPORTED
from seqserve.v1 import translation_pb2

from bench.endpoints import FACTORIES, translation_endpoint

TEXTS = ["In the beginning, God created the heavens and the earth.", "Jesus wept."]


@pytest.mark.parametrize("task", sorted(FACTORIES))
def test_every_endpoint_factory_builds_for_the_committed_models(task: str) -> None:
    assert FACTORIES[task](EXPORTED, TEXTS) is not None, f"{task}: no endpoint although exported/ has its model"


def test_translation_endpoint_baseline_translates_with_the_served_options() -> None:
    endpoint = translation_endpoint(EXPORTED, TEXTS)
    assert endpoint is not None
    request = translation_pb2.TranslateRequest.FromString(endpoint.requests[1])
    assert list(request.texts) == [TEXTS[1]] and request.options.beam_size == 1
    results = endpoint.raw(1)  # the pipeline's list of translations, one per text
    assert isinstance(results, list) and len(results) == 1
    assert results[0].hypotheses[0].text.strip()
