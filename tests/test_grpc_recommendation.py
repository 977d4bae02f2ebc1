"""Recommendation.Recommend over gRPC and the `seqserve recommend` CLI, against the real server on a tiny
SASRec trained on MovieLens-100K (max_history 20, max_k 50): titles resolved, attention over the
history, the popularity fallback, truncation, and every bad input refused with INVALID_ARGUMENT."""

from __future__ import annotations

import json

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from recommendation_support import MAX_HISTORY, NAME
from seqserve.v1 import recommendation_pb2, recommendation_pb2_grpc

from service.client.cli import main
from service.client.client import SeqserveClient

pytestmark = pytest.mark.slow
SERVICE = "seqserve.v1.Recommendation"


@pytest.fixture(scope="module")
def stub(recommendation_server):
    with grpc.insecure_channel(recommendation_server.target) as channel:
        yield recommendation_pb2_grpc.RecommendationStub(channel)


def by_ids(*ids: int) -> list[recommendation_pb2.HistoryItem]:
    return [recommendation_pb2.HistoryItem(id=i) for i in ids]


def recommend(stub, history, **fields) -> recommendation_pb2.RecommendResponse:
    return stub.Recommend(recommendation_pb2.RecommendRequest(history=history, **fields), timeout=30)


def refusal(stub, history, **fields) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        recommend(stub, history, **fields)
    return error.value.code(), error.value.details()


def test_recommends_k_described_items_with_attention_over_the_history(stub) -> None:
    response = recommend(stub, by_ids(1, 50, 100), k=5)
    assert len(response.items) == 5 and not response.fallback and not response.truncated
    assert [r.score for r in response.items] == sorted((r.score for r in response.items), reverse=True)
    for recommended in response.items:
        assert recommended.item.title and recommended.item.name and recommended.item.genres
    assert [w.item.id for w in response.attention] == [1, 50, 100]
    assert [w.index for w in response.attention] == [0, 1, 2]
    assert response.attention[0].item.name == "Toy Story (1995)" and response.attention[0].item.year == 1995
    assert sum(w.weight for w in response.attention) == pytest.approx(1, abs=1e-5)
    assert (response.history_used, response.max_history) == (3, MAX_HISTORY)
    assert (response.model.name, response.model.version) == (NAME, "1")


def test_omit_attention_leaves_out_only_the_history_weights(stub) -> None:
    full = recommend(stub, by_ids(1, 50, 100), k=5)
    lean = recommend(stub, by_ids(1, 50, 100), k=5, omit_attention=True)
    assert len(full.attention) == 3 and not lean.attention
    del full.attention[:]
    assert lean == full  # items, scores, history_used and the rest unchanged


def test_titles_resolve_to_the_same_items_as_ids(stub) -> None:
    titles = [recommendation_pb2.HistoryItem(title=t) for t in ("Toy Story (1995)", "  star wars (1977) ")]
    with_titles = recommend(stub, titles, k=10)
    star_wars = next(w.item.id for w in with_titles.attention if w.item.title == "Star Wars")
    with_ids = recommend(stub, by_ids(1, star_wars), k=10)
    assert [r.item.id for r in with_titles.items] == [r.item.id for r in with_ids.items]


def test_k_defaults_to_10_and_exclude_seen_leaves_out_the_history(stub) -> None:
    first = recommend(stub, by_ids(7))
    assert len(first.items) == 10
    favourites = [r.item.id for r in first.items[:3]]
    again = recommend(stub, by_ids(7, *favourites), k=10, exclude_seen=True)
    assert not {7, *favourites} & {r.item.id for r in again.items} and len(again.items) == 10


def test_an_empty_history_gets_the_most_popular_items_flagged_as_fallback(stub, tiny_recommendation) -> None:
    _, trained = tiny_recommendation
    response = recommend(stub, [], k=3)
    assert response.fallback and not response.attention and response.history_used == 0
    counts: dict[int, int] = {}
    for sequence in trained.splits.train.values():
        for item in sequence:
            counts[item] = counts.get(item, 0) + 1
    most_popular = sorted(counts, key=lambda i: (-counts[i], i))[:3]
    assert [r.item.id for r in response.items] == most_popular


def test_a_history_longer_than_the_maximum_uses_the_most_recent_items_and_says_so(stub) -> None:
    history = list(range(1, MAX_HISTORY + 6))
    response = recommend(stub, by_ids(*history), k=5)
    assert response.truncated and response.history_used == MAX_HISTORY
    assert not response.whole_history_scored  # the tiny model is self-attention only
    assert [w.index for w in response.attention] == list(range(5, MAX_HISTORY + 5))
    assert [w.item.id for w in response.attention] == history[5:]
    recent = recommend(stub, by_ids(*history[5:]), k=5)
    assert not recent.truncated
    assert [r.item.id for r in response.items] == [r.item.id for r in recent.items]


def test_a_catalogue_without_keys_takes_each_id_in_decimal_as_its_key(stub) -> None:
    """MovieLens models have no item ids of their own: key "50" is id 50, and every item answers with it."""
    by_key = recommend(stub, [recommendation_pb2.HistoryItem(key=k) for k in ("1", "50", "100")], k=5)
    with_ids = recommend(stub, by_ids(1, 50, 100), k=5)
    assert by_key == with_ids
    assert [w.item.key for w in by_key.attention] == ["1", "50", "100"]
    assert all(r.item.key == str(r.item.id) for r in by_key.items)


def test_unknown_items_are_all_listed(stub) -> None:
    history = [*by_ids(1, 99999, 0), recommendation_pb2.HistoryItem(title="No Such Movie (2031)"),
               recommendation_pb2.HistoryItem(), recommendation_pb2.HistoryItem(key="sku-0042"),
               recommendation_pb2.HistoryItem(key=" 1")]
    code, details = refusal(stub, history)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("history: unknown items:")
    for expected in ("history[1] id 99999", "history[2] id 0", "history[3] title 'No Such Movie (2031)'",
                     "history[4] has no id, title or key", "history[5] key 'sku-0042'", "history[6] key ' 1'",
                     "ids are 1..1682"):
        assert expected in details
    assert "history[0]" not in details


def test_an_ambiguous_bare_title_names_its_candidates(stub) -> None:
    # ML-100K has "Shall We Dance?" from 1937 and from 1996; the year settles it.
    code, details = refusal(stub, [recommendation_pb2.HistoryItem(title="shall we dance?")])
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "history[0] title 'shall we dance?' is ambiguous" in details
    assert "Shall We Dance? (1937)" in details and "Shall We Dance? (1996)" in details
    response = recommend(stub, [recommendation_pb2.HistoryItem(title="Shall We Dance? (1996)")])
    assert response.attention[0].item.year == 1996


@pytest.mark.parametrize("k", [0, -1, 51])
def test_k_out_of_range_names_the_field_and_the_limit(stub, k: int) -> None:
    assert refusal(stub, by_ids(1), k=k) == (grpc.StatusCode.INVALID_ARGUMENT, f"k: {k} is out of range 1..50")


def test_too_many_history_items_are_refused_with_the_limit(stub) -> None:
    code, details = refusal(stub, by_ids(*([1] * 5001)))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "history: 5001 items exceeds the limit of 5000")


def test_an_unknown_model_is_not_found(stub) -> None:
    code, details = refusal(stub, by_ids(1), model="no-such-model")
    assert code == grpc.StatusCode.NOT_FOUND and "no-such-model" in details and NAME in details


def test_health_and_reflection_know_the_service(recommendation_server) -> None:
    with grpc.insecure_channel(recommendation_server.target) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        [answer] = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                   timeout=10)
        assert SERVICE in {s.name for s in answer.list_services_response.service}


def test_the_python_client_takes_ids_and_titles(recommendation_server) -> None:
    with SeqserveClient(recommendation_server.target) as client:
        response = client.recommend([1, "Star Wars (1977)", recommendation_pb2.HistoryItem(key="100")], k=4,
                                    exclude_seen=True)
    assert len(response.items) == 4
    assert [w.item.title for w in response.attention] == ["Toy Story", "Star Wars", "Double Team"]
    assert response.attention[2].item.id == 100


def cli(server, capsys, *args: str) -> tuple[int, str, str]:
    code = main(["--target", server.target, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_prints_the_history_weights_and_titled_recommendations(recommendation_server, capsys) -> None:
    code, out, err = cli(recommendation_server, capsys, "recommend", "#1", "Star Wars (1977)", "@100", "-k", "3",
                         "--exclude-seen")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "history: 3 items; attention of the last item over it:"
    assert lines[1].endswith("Toy Story (1995)") and lines[2].endswith("Star Wars (1977)")
    assert lines[3].endswith("Double Team (1997)")
    assert lines[4] == "recommended:"
    assert [line.split()[0] for line in lines[5:8]] == ["1.", "2.", "3."]
    assert all("score" in line and "#" in line for line in lines[5:8])
    assert lines[-1] == f"model {NAME} version 1"


def test_cli_no_attention_prints_the_recommendations_only(recommendation_server, capsys) -> None:
    code, out, err = cli(recommendation_server, capsys, "recommend", "#1", "#50", "-k", "2", "--no-attention")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:2] == ["history: 2 items", "recommended:"]
    assert [line.split()[0] for line in lines[2:4]] == ["1.", "2."]


def test_cli_reports_fallback_truncation_and_errors(recommendation_server, capsys) -> None:
    code, out, _ = cli(recommendation_server, capsys, "recommend", "-k", "2")
    assert code == 0 and out.startswith("history empty: the 2 most popular items (fallback, no model ran)")
    history = [f"#{i}" for i in range(1, MAX_HISTORY + 3)]
    code, out, _ = cli(recommendation_server, capsys, "recommend", *history)
    assert code == 0
    assert out.splitlines()[0] == (f"history: {MAX_HISTORY + 2} items, only the most recent {MAX_HISTORY} were "
                                   f"used (max {MAX_HISTORY}); attention of the last item over it:")
    code, _, err = cli(recommendation_server, capsys, "recommend", "#1", "-k", "500")
    assert code == 2 and err.strip() == "error: INVALID_ARGUMENT: k: 500 is out of range 1..50"
    code, out, _ = cli(recommendation_server, capsys, "--json", "recommend", "#1", "-k", "2")
    assert code == 0 and len(json.loads(out)["items"]) == 2
