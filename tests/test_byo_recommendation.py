"""python -m training.train recommendation on the user's own CSV: a shop's catalogue with string ids the
project never used ("sku-0042", users "cust-07"), titles and genres from an items file, bad files refused
with their line numbers, and a trained SASRec served by the real server next to the committed
sasrec-ml1m, answering with the shop's keys and titles while the committed model answers as before."""

from __future__ import annotations

import json
import pathlib
import random
import shutil

import grpc
import pytest
from exported_models import latest_version_dir
from seqserve.v1 import recommendation_pb2, recommendation_pb2_grpc

from training.train import main

AISLES = ("garden", "kitchen", "tools", "toys")
ITEMS_PER_AISLE = 12


def sku(number: int) -> str:
    return f"sku-{number:04d}"


def title(number: int) -> str:
    return f"{AISLES[number % len(AISLES)].title()} thing {number}"


def shop_rows(users: int = 60, seed: int = 0, short_users: int = 3) -> list[tuple[str, str, int]]:
    """(user, item, timestamp): each customer shops one aisle mostly in its order, so there is a pattern;
    `short_users` more customers with 2 purchases, which the trainer drops."""
    rng = random.Random(seed)
    rows = []
    for user in range(users):
        aisle = rng.randrange(len(AISLES))
        start = rng.randrange(ITEMS_PER_AISLE)
        stamp = 1_700_000_000 + rng.randrange(10**6)
        for step in range(rng.randrange(4, 10)):
            number = aisle + len(AISLES) * ((start + step) % ITEMS_PER_AISLE)
            if rng.random() < 0.15:
                number = rng.randrange(len(AISLES) * ITEMS_PER_AISLE)
            stamp += rng.randrange(1, 5000)
            rows.append((f"cust-{user:02d}", sku(number), stamp))
    for user in range(short_users):
        rows += [(f"brief-{user}", sku(1), 5), (f"brief-{user}", sku(2), 6)]
    rng.shuffle(rows)  # file order must not matter: the timestamps order each history
    return rows


def write_csv(tmp_path: pathlib.Path, rows: list[tuple[object, ...]], header: str = "user,item,timestamp",
              name: str = "purchases.csv") -> pathlib.Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *(",".join(map(str, r)) for r in rows)]) + "\n", encoding="utf-8")
    return path


def write_items(tmp_path: pathlib.Path) -> pathlib.Path:
    rows = [(sku(n), title(n), f"{AISLES[n % len(AISLES)]}|shop") for n in range(len(AISLES) * ITEMS_PER_AISLE)]
    rows.append((sku(999), "Never sold (2021)", "attic"))
    return write_csv(tmp_path, rows, header="item,title,genres", name="items.csv")


def refused(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], path: pathlib.Path, *extra: str) -> str:
    """The command's error output for a file it must refuse (exit 2, nothing written)."""
    out = tmp_path / "models"
    assert main(["recommendation", "--data", str(path), "--name", "shop", "--out", str(out), "--dry-run",
                 *extra]) == 2
    assert not out.exists()
    return capsys.readouterr().err


def test_a_good_file_is_planned_from_its_own_ids_and_sizes(tmp_path, capsys) -> None:
    path = write_csv(tmp_path, shop_rows())
    out = tmp_path / "m"
    assert main(["recommendation", "--data", str(path), "--items", str(write_items(tmp_path)), "--name", "shop",
                 "--out", str(out), "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["users"] == "60" and plan["users_dropped_below_3_interactions"] == "3"
    assert plan["items_file_entries_never_interacted"] == "1" and plan["items_without_title"] == "0"
    assert {"train_sha256", "dev_sha256", "test_sha256"} <= set(plan)
    assert plan["model_config"]["hidden_dim"] == 16 and plan["model_config"]["max_length"] == 10  # small data
    assert plan["cooccurrence"].startswith("l2 = ")
    assert not out.exists()


def test_the_split_ignores_file_order_and_is_recorded(tmp_path, capsys) -> None:
    rows = shop_rows()
    hashes = []
    for order in (rows, list(reversed(rows))):
        path = write_csv(tmp_path, order)
        assert main(["recommendation", "--data", str(path), "--name", "shop", "--out", str(tmp_path / "m"),
                     "--dry-run"]) == 0
        plan = json.loads(capsys.readouterr().out)
        hashes.append([plan[f"{part}_sha256"] for part in ("train", "dev", "test")])
    assert hashes[0] == hashes[1]


def test_renamed_columns_are_read_with_the_column_options(tmp_path, capsys) -> None:
    path = write_csv(tmp_path, [(t, u, i, "x") for u, i, t in shop_rows()], header="when,customer,product,note")
    error = refused(tmp_path, capsys, path)
    assert ":1: the header 'when,customer,product,note' lacks the column(s) 'user' (set it with --user-column)" \
           in error and "'item' (set it with --item-column)" in error and "'timestamp'" in error
    assert main(["recommendation", "--data", str(path), "--name", "shop", "--out", str(tmp_path / "m"), "--dry-run",
                 "--user-column", "customer", "--item-column", "product", "--time-column", "when"]) == 0
    assert json.loads(capsys.readouterr().out)["users"] == "60"


def test_bad_rows_are_refused_with_their_lines(tmp_path, capsys) -> None:
    lines = write_csv(tmp_path, shop_rows()).read_text().split("\n")
    lines[2] = "cust-01,sku-0001"            # line 3: two fields
    lines[4] = ",sku-0001,17"                # line 5: no user
    lines[6] = "cust-01, ,17"                # line 7: a blank item
    lines[8] = "cust-01,sku-0001,yesterday"  # line 9: not a number
    lines[10] = "cust-01,sku-0001,nan"       # line 11: not a finite number
    error = refused(tmp_path, capsys, write_csv(tmp_path, [], header="\n".join(lines)))
    assert "5 problem(s)" in error
    assert ":3: expected 3 fields as in the header, found 2" in error
    assert ":5: empty user id" in error and ":7: empty item id" in error
    assert ":9: timestamp 'yesterday' is not a number" in error and ":11: timestamp 'nan'" in error


def test_bad_items_files_are_refused_with_their_lines(tmp_path, capsys) -> None:
    purchases = write_csv(tmp_path, shop_rows())
    items = write_csv(tmp_path, [("sku-0001", "Spade"), ("sku-0002", ""), ("", "Rake"), ("sku-0001", "Hoe")],
                      header="item,title", name="items.csv")
    error = refused(tmp_path, capsys, purchases, "--items", str(items))
    assert "3 problem(s)" in error
    assert ":3: expected item,title[,genre...]: no title" in error
    assert ":4: expected item,title[,genre...]: empty item id" in error
    assert ":5: item 'sku-0001' again (first on line 2)" in error


def test_empty_tiny_and_undecodable_files_are_refused(tmp_path, capsys) -> None:
    assert "the file is empty" in refused(tmp_path, capsys, write_csv(tmp_path, [], header="", name="e.csv"))
    assert "no interactions" in refused(tmp_path, capsys, write_csv(tmp_path, [], name="h.csv"))
    error = refused(tmp_path, capsys, write_csv(tmp_path, shop_rows(users=8), name="few.csv"))
    assert "8 user(s) with at least 3 interactions (3 with fewer dropped); at least 10 are needed" in error
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"user,item,timestamp\nu1,caf\xe9,1\n")
    assert ":2: not UTF-8 text" in refused(tmp_path, capsys, path)
    assert "does not exist" in refused(tmp_path, capsys, tmp_path / "missing.csv")


def recommend(stub: recommendation_pb2_grpc.RecommendationStub, model: str,
              history: list[recommendation_pb2.HistoryItem], **fields: object) -> recommendation_pb2.RecommendResponse:
    return stub.Recommend(recommendation_pb2.RecommendRequest(history=history, model=model, **fields), timeout=30)


@pytest.mark.slow
def test_a_trained_shop_model_is_served_by_its_keys_and_titles_next_to_the_committed_one(
        tmp_path, monkeypatch, capsys, start_server) -> None:
    out = tmp_path / "models"
    committed = latest_version_dir("sasrec-ml1m")
    shutil.copytree(committed, out / "sasrec-ml1m" / committed.name)
    path = write_csv(tmp_path, shop_rows(seed=1))
    monkeypatch.setenv("SEQSERVE_CHECKPOINTS", str(tmp_path / "checkpoints"))
    assert main(["recommendation", "--data", str(path), "--items", str(write_items(tmp_path)), "--name", "shop",
                 "--out", str(out), "--threads", "1", "--max-epochs", "2", "--max-steps", "6"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed[printed.rindex("\n{\n") + 1:] if "\n{\n" in printed else printed)
    version = out / "shop" / "1"
    assert report["version_dir"] == str(version) and not [p for p in (out / "shop").iterdir() if p.name != "1"]
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["task"] == "recommendation" and not manifest["default_for_task"]
    assert manifest["data"]["users_dropped_below_3_interactions"] == "3"
    assert set(manifest["metrics"]) >= {"served", "popularity_baseline"} and manifest["metrics"]["n"] == 60
    assert manifest["parity"]["max_abs_score_diff"] < 1e-3 and "cooccurrence" in manifest
    catalogue = json.loads((version / "items.json").read_text())["items"]
    assert {row["key"] for row in catalogue} == {sku(n) for n in range(len(AISLES) * ITEMS_PER_AISLE)}

    server = start_server(model_dir=out)
    with grpc.insecure_channel(server.target) as channel:
        stub = recommendation_pb2_grpc.RecommendationStub(channel)
        by_key = recommend(stub, "shop", [recommendation_pb2.HistoryItem(key=sku(n)) for n in (4, 8, 12)], k=5)
        by_title = recommend(stub, "shop", [recommendation_pb2.HistoryItem(title=title(n)) for n in (4, 8)]
                             + [recommendation_pb2.HistoryItem(title=title(12).upper())], k=5)
        fallback = recommend(stub, "shop", [], k=3)
        with pytest.raises(grpc.RpcError) as unknown:
            recommend(stub, "shop", [recommendation_pb2.HistoryItem(key="sku-0999")])
        ml1m_ids = recommend(stub, "sasrec-ml1m", [recommendation_pb2.HistoryItem(id=i) for i in (1, 50, 100)])
        ml1m_keys = recommend(stub, "sasrec-ml1m", [recommendation_pb2.HistoryItem(key=k) for k in ("1", "50", "100")])
        default = recommend(stub, "", [recommendation_pb2.HistoryItem(id=1)])

    assert by_key.model.name == "shop" and len(by_key.items) == 5 and by_key.whole_history_scored
    assert [w.item.key for w in by_key.attention] == [sku(4), sku(8), sku(12)]
    assert [w.item.name for w in by_key.attention] == [title(4), title(8), title(12)]
    assert by_key.attention[0].item.genres == ["garden", "shop"]
    shop_keys = {sku(n) for n in range(len(AISLES) * ITEMS_PER_AISLE)}
    assert {r.item.key for r in by_key.items} <= shop_keys
    assert all(r.item.title == title(int(r.item.key[4:])) for r in by_key.items)
    assert [(r.item.key, r.score) for r in by_title.items] == [(r.item.key, r.score) for r in by_key.items]
    assert fallback.fallback and {r.item.key for r in fallback.items} <= shop_keys
    # sku-0999 is in the items file but nobody bought it: the model has no embedding for it.
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "history[0] key 'sku-0999'" in unknown.value.details()

    assert ml1m_ids == ml1m_keys and ml1m_ids.model.name == "sasrec-ml1m"
    assert all(r.item.key == str(r.item.id) for r in ml1m_ids.items)
    ml1m_names = {row["id"]: row["name"] for row in json.loads((committed / "items.json").read_text())["items"]}
    assert [w.item.name for w in ml1m_ids.attention] == [ml1m_names[i] for i in (1, 50, 100)]
    assert default.model.name == "sasrec-ml1m"  # the user's model does not take the task's default
