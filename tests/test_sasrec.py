"""SASRec: causal, padding-blind, trained on every window, and exported to ONNX that matches torch."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from recommendation_support import MAX_HISTORY, NAME
from torch import nn

from training.data.movielens import Case, Item, Splits, item_features
from training.export.recommendation import export_sasrec, parity
from training.loop import LoopConfig, epochs_trained_evaluator
from training.models.sasrec import (
    SASRec,
    SASRecConfig,
    SASRecEnsemble,
    SASRecForExport,
    fold_item_features,
    replace_items,
)
from training.train_recommendation import (
    export_version,
    final_phase_config,
    initial_phase_record,
    refit_sequences,
    right_pad,
    train_sasrec,
    training_windows,
)

torch.set_num_threads(1)


def small_model(seed: int = 0, positions: str = "from_start") -> SASRec:
    torch.manual_seed(seed)
    return SASRec(SASRecConfig(num_items=30, max_length=12, hidden_dim=8, num_blocks=2, num_heads=2,
                               positions=positions)).eval()


def test_a_position_never_sees_later_items() -> None:
    model = small_model()
    with torch.no_grad():
        one, _ = model.encode(torch.tensor([[3, 4, 5, 6, 7]]))
        other, _ = model.encode(torch.tensor([[3, 4, 5, 29, 1]]))
    assert torch.allclose(one[0, :3], other[0, :3], atol=1e-6)
    assert not torch.allclose(one[0, 3:], other[0, 3:], atol=1e-3)


@pytest.mark.parametrize("positions", ["from_start", "from_end"])
def test_right_padding_changes_nothing_and_attention_covers_only_the_history(positions: str) -> None:
    model = small_model(positions=positions)
    histories = [[3, 4, 5, 6, 7], [9, 2], [1]]
    lengths = torch.tensor([len(h) for h in histories])
    with torch.no_grad():
        scores, attention = SASRecForExport(model)(right_pad(histories), lengths)
        for row, history in enumerate(histories):
            alone, alone_attention = SASRecForExport(model)(torch.tensor([history]), torch.tensor([len(history)]))
            assert torch.allclose(scores[row], alone[0], atol=1e-5)
            assert torch.allclose(attention[row, : len(history)], alone_attention[0], atol=1e-6)
    assert attention.shape == (3, 5) and scores.shape == (3, 30)
    assert torch.allclose(attention.sum(dim=1), torch.ones(3), atol=1e-6)
    assert attention[1, 2:].abs().max() == 0 and attention[2, 1:].abs().max() == 0


def test_loss_skips_padding_targets() -> None:
    model = small_model()
    padded = right_pad([[3, 4, 5], [6, 7]])
    loss, count = model.next_item_loss(padded[:, :-1], padded[:, 1:])
    assert count == 3  # 4->5, 3->4 and 6->7; the pad after 7 is no target
    assert torch.isfinite(loss)


def one_item_catalogue_model() -> SASRec:
    """Every uniform negative drawn from a one-movie catalogue is the target itself."""
    torch.manual_seed(0)
    return SASRec(SASRecConfig(num_items=1, max_length=4, hidden_dim=8, num_blocks=1, num_heads=1)).eval()


def test_sampled_softmax_ignores_negatives_that_are_the_target() -> None:
    model = one_item_catalogue_model()
    padded = right_pad([[1, 1, 1]])
    loss, count = model.next_item_loss(padded[:, :-1], padded[:, 1:], "ssm", negatives=5)
    assert count == 2 and loss.item() == 0.0  # only the target is left to choose: nothing to learn


def test_bce_averages_the_target_and_its_k_negatives() -> None:
    model = one_item_catalogue_model()
    padded = right_pad([[1, 1, 1]])
    with torch.no_grad():
        states, _ = model.encode(padded[:, :-1])
        logits = (states[0] * model.item_embedding.weight[1]).sum(-1)  # the target's logit, 2 positions
        loss, _ = model.next_item_loss(padded[:, :-1], padded[:, 1:], "bce", negatives=3)
    softplus = torch.nn.functional.softplus
    # per position: the target labelled 1 once, the same item drawn as a negative labelled 0 three times
    expected = ((softplus(-logits) + 3 * softplus(logits)) / 4).mean()
    assert torch.allclose(loss, expected, atol=1e-6)


def test_loss_terms_add_up_and_unknown_terms_are_refused() -> None:
    model = small_model()
    padded = right_pad([[3, 4, 5, 9], [6, 7]])
    inputs, targets = padded[:, :-1], padded[:, 1:]
    torch.manual_seed(1)
    ce, _ = model.next_item_loss(inputs, targets, "ce")
    torch.manual_seed(1)
    ssm, _ = model.next_item_loss(inputs, targets, "ssm", negatives=10)
    torch.manual_seed(1)
    both, _ = model.next_item_loss(inputs, targets, "ce+ssm", negatives=10)
    assert torch.allclose(both, ce + ssm, atol=1e-6) and ssm.item() > 0
    with pytest.raises(ValueError, match="unknown loss terms"):
        model.next_item_loss(inputs, targets, "ce+hinge")


def test_item_noise_swaps_about_that_share_of_real_items_and_never_padding() -> None:
    torch.manual_seed(3)
    history = torch.cat([torch.randint(1, 1001, (200, 150)), torch.zeros(200, 50, dtype=torch.long)], dim=1)
    noisy = replace_items(history, 0.1, num_items=1000)
    swapped = (noisy != history)[:, :150].float().mean().item()
    assert 0.09 < swapped < 0.11  # 30,000 real items; a swap to the same id (1 in 1,000) is not counted
    assert (noisy[:, 150:] == 0).all() and ((noisy[:, :150] >= 1) & (noisy[:, :150] <= 1000)).all()
    assert torch.equal(replace_items(history, 0.0, num_items=1000), history)


def test_item_noise_changes_the_inputs_the_loss_sees_but_not_its_targets() -> None:
    model = small_model()
    padded = right_pad([[3, 4, 5, 9], [6, 7]])
    inputs, targets = padded[:, :-1], padded[:, 1:]
    clean, clean_count = model.next_item_loss(inputs, targets, "ce")
    torch.manual_seed(0)
    noisy, noisy_count = model.next_item_loss(inputs, targets, "ce", item_noise=1.0)  # every input swapped
    assert noisy_count == clean_count == 4 and not torch.allclose(noisy, clean)
    assert torch.equal(inputs, padded[:, :-1])  # the caller's batch is not modified in place


def test_training_windows_predict_every_item_after_the_first_once() -> None:
    sequence = list(range(1, 12))  # 11 items, windows of at most 4 (max_length 3 + 1)
    windows = training_windows({"a": sequence}, max_length=3, all_windows=True)
    assert windows == [[8, 9, 10, 11], [5, 6, 7, 8], [2, 3, 4, 5], [1, 2]]
    assert sorted(t for w in windows for t in w[1:]) == sequence[1:]
    assert training_windows({"a": sequence}, max_length=3, all_windows=False) == [[8, 9, 10, 11]]
    assert training_windows({"b": [4]}, max_length=3, all_windows=True) == []


@pytest.mark.slow
def test_exported_graph_matches_torch_for_several_lengths_and_batches(tiny_recommendation) -> None:
    models, trained = tiny_recommendation
    version = models / NAME / "1"
    batches = [[1], [MAX_HISTORY], [7, 3], [MAX_HISTORY, 1, 13, 2, 19]]
    measured = parity(trained.model, version / "model.onnx", batches, seed=11)
    assert measured["max_abs_score_diff"] < 1e-4
    assert measured["max_abs_attention_diff"] < 1e-5
    assert measured["top10_equal"] == 1.0
    manifest = json.loads((version / "manifest.json").read_text("utf-8"))
    assert manifest["parity"]["max_abs_score_diff"] < 1e-4  # what export measured is recorded
    inputs = {spec["name"]: spec["shape"] for spec in manifest["onnx"]["inputs"]}
    assert inputs == {"history": ["batch", "history_length"], "lengths": ["batch"]}


@pytest.mark.slow
def test_manifest_records_catalogue_limits_and_split_hashes(tiny_recommendation) -> None:
    models, trained = tiny_recommendation
    version = models / NAME / "1"
    manifest = json.loads((version / "manifest.json").read_text("utf-8"))
    assert set(manifest["files"]) == {"model.onnx", "items.json", "popularity.json"}
    assert manifest["limits"] == {"max_history": MAX_HISTORY, "max_k": 50}
    assert manifest["data"]["test_sha256"] and manifest["data"]["dataset"] == "ml-100k"
    items = json.loads((version / "items.json").read_text("utf-8"))["items"]
    assert len(items) == trained.data.num_items == 1682
    assert items[0] == {"id": 1, "name": "Toy Story (1995)", "title": "Toy Story", "year": 1995,
                        "genres": ["Animation", "Children's", "Comedy"]}
    counts = json.loads((version / "popularity.json").read_text("utf-8"))["interaction_counts"]
    assert counts[0] == 0 and sum(counts) == sum(len(s) for s in trained.splits.train.values())


def test_a_refit_learns_the_dev_item_but_never_the_test_item() -> None:
    splits = Splits(train={"a": [1, 2, 3], "b": [4, 5]},
                    dev=[Case("a", (1, 2, 3), 7), Case("b", (4, 5), 8)],
                    test=[Case("a", (1, 2, 3, 7), 9), Case("b", (4, 5, 8), 6)])
    assert refit_sequences(splits) == {"a": [1, 2, 3, 7], "b": [4, 5, 8]}
    count = epochs_trained_evaluator()  # no held-out data: the loop keeps the last epoch
    assert [count(torch.nn.Linear(1, 1))["epochs_trained"] for _ in range(3)] == [1, 2, 3]


def test_an_ensemble_serves_the_mean_of_its_members_through_one_graph(tmp_path) -> None:
    members = [small_model(seed) for seed in (1, 2, 3)]
    ensemble = SASRecEnsemble(members).eval()
    histories = [[3, 4, 5, 6, 7], [9, 2], [1]]
    padded, lengths = right_pad(histories), torch.tensor([len(h) for h in histories])
    with torch.no_grad():
        scores, attention = SASRecForExport(ensemble)(padded, lengths)
        alone = [SASRecForExport(m)(padded, lengths) for m in members]
    assert torch.allclose(scores, sum(a[0] for a in alone) / 3, atol=1e-6)
    assert torch.allclose(attention, sum(a[1] for a in alone) / 3, atol=1e-6)
    assert not torch.allclose(scores, alone[0][0], atol=1e-3)  # the members really differ
    export_sasrec(ensemble, tmp_path / "model.onnx")
    measured = parity(ensemble, tmp_path / "model.onnx", [[1], [12, 5, 3], [7, 7]])
    assert measured["max_abs_score_diff"] < 1e-4 and measured["top10_equal"] == 1.0
    with pytest.raises(ValueError, match="one config"):
        SASRecEnsemble([small_model(), SASRec(SASRecConfig(num_items=30, max_length=12, hidden_dim=16))])


def test_a_second_phase_records_the_run_it_started_from(tmp_path) -> None:
    run = tmp_path / "first-run"
    run.mkdir()
    history = [{"epoch": 1, "full_ndcg@10": 0.1}, {"epoch": 2, "full_ndcg@10": 0.2}]
    (run / "history.json").write_text(json.dumps(history))
    record = initial_phase_record(run / "best.pt", {"model": {}, "metrics": history[1]})
    assert record == {"checkpoint": str(run / "best.pt"), "dev": history[1], "history": history}
    copied = tmp_path / "elsewhere.pt"  # no history beside it: say so rather than guess
    assert initial_phase_record(copied, {"model": {}, "metrics": history[1]})["history"] is None


def test_the_final_phase_keeps_the_first_phases_settings_in_a_checkpoint_dir_of_its_own() -> None:
    first = LoopConfig(max_epochs=22, learning_rate=1e-3, warmup_steps=100, patience=5, seed=13,
                       checkpoint_dir="checkpoints/run")
    final = final_phase_config(first, {"max_epochs": 6, "lr_schedule": "warmup_linear"})
    assert (final.max_epochs, final.lr_schedule, final.checkpoint_dir) == (6, "warmup_linear", "checkpoints/run-decay")
    assert (final.learning_rate, final.warmup_steps, final.seed, final.metric) == (1e-3, 100, 13, first.metric)


def featured_model(seed: int = 0) -> SASRec:
    """small_model's shape, reading 4 item features (a random 0/1 table, row 0 padding) with a random projection."""
    torch.manual_seed(seed)
    model = SASRec(SASRecConfig(num_items=30, max_length=12, hidden_dim=8, num_blocks=2, num_heads=2, item_features=4))
    with torch.no_grad():
        model.feature_table.copy_((torch.rand(31, 4) < 0.4).float())
        model.feature_table[0] = 0
        nn.init.normal_(model.feature_projection.weight)
    return model.eval()


def test_items_with_the_same_features_move_together() -> None:
    model = featured_model()
    with torch.no_grad():
        model.feature_table[5] = model.feature_table[6] = torch.tensor([1.0, 0.0, 1.0, 0.0])
        before = model.item_table().clone()
        model.feature_projection.weight.add_(1.0)
        moved = model.item_table() - before
    assert torch.allclose(moved[5], moved[6]) and moved[5].abs().sum() > 0
    assert torch.equal(moved[0], torch.zeros(8))  # padding has no features


def test_features_start_at_zero_so_an_ids_only_start_is_unchanged() -> None:
    ids_only = small_model(seed=3)
    featured = SASRec(SASRecConfig(**{**dataclasses.asdict(ids_only.config), "item_features": 4})).eval()
    missing, unexpected = featured.load_state_dict(ids_only.state_dict(), strict=False)
    assert set(missing) == {"feature_table", "feature_projection.weight"} and not unexpected
    with torch.no_grad():
        featured.feature_table.copy_(torch.rand(31, 4))
        histories = right_pad([[3, 4, 5], [9]])
        lengths = torch.tensor([3, 1])
        with_features = SASRecForExport(featured)(histories, lengths)[0]
        assert torch.equal(with_features, SASRecForExport(ids_only)(histories, lengths)[0])


def test_a_featured_model_exports_as_one_embedding_table_that_matches_torch(tmp_path) -> None:
    model = featured_model()
    folded = fold_item_features(model)
    assert folded.config.item_features == 0 and not hasattr(folded, "feature_projection")
    histories = right_pad([[3, 4, 5, 6, 7], [9, 2], [1]])
    lengths = torch.tensor([5, 2, 1])
    with torch.no_grad():
        for want, got in zip(SASRecForExport(model)(histories, lengths), SASRecForExport(folded)(histories, lengths),
                             strict=True):
            assert torch.allclose(want, got, atol=1e-6)
    graph = export_sasrec(model, tmp_path / "model.onnx")
    assert [i.name for i in graph.graph.input] == ["history", "lengths"]
    measured = parity(model, tmp_path / "model.onnx", [[1], [12, 5, 3], [7, 7]])  # torch with features vs the graph
    assert measured["max_abs_score_diff"] < 1e-4 and measured["top10_equal"] == 1.0


def test_the_catalogue_gives_every_item_its_genres_and_one_era() -> None:
    items = [Item(1, "a", "A", 1955, ("Drama",)), Item(2, "b", "B", 1999, ("Comedy", "Drama")),
             Item(3, "c", "C", 0, ("Comedy",)), Item(4, "d", "D", 2000, ())]
    names, rows = item_features(items)
    assert names[:2] == ["genre:Comedy", "genre:Drama"] and all(n.startswith("era") for n in names[2:])
    assert len(rows) == 5 and rows[0] == [0.0] * len(names)
    era = {names[j] for j in range(2, len(names)) if rows[1][j]}
    assert era == {"era<1960"} and rows[1][:2] == [0.0, 1.0]
    assert {names[j] for j in range(2, len(names)) if rows[2][j]} == {"era<2000"} and rows[2][:2] == [1.0, 1.0]
    assert sum(rows[3][2:]) == 0  # year unknown: no era
    assert {names[j] for j in range(2, len(names)) if rows[4][j]} == {"era>=2000"} and sum(rows[4][:2]) == 0


def test_a_run_with_item_features_starts_from_an_ids_only_run_and_records_them(tmp_path) -> None:
    from recommendation_support import MODEL, train_tiny

    train_tiny(tmp_path / "ids-only", steps=3)
    loop = LoopConfig(max_epochs=1, learning_rate=5e-3, max_steps=3, metric="full_ndcg@10",
                      checkpoint_dir=str(tmp_path / "featured"), patience=1)
    trained = train_sasrec("ml-100k", MODEL, loop, all_windows=True, batch_size=32,
                           init_from=tmp_path / "ids-only" / "best.pt", item_features=True)
    assert trained.item_features and trained.item_features[0].startswith("genre:")
    assert trained.model.feature_table[1:].sum(dim=1).min() >= 1  # every ML-100K item has a genre or an era
    assert trained.model.feature_projection.weight.abs().sum() > 0  # it learned from 0
    manifest = export_version(trained, tmp_path / "models" / NAME / "1", NAME, max_k=50, evaluate=False)
    assert manifest["training"]["item_features"] == trained.item_features
    assert manifest["parity"]["max_abs_score_diff"] < 1e-4
