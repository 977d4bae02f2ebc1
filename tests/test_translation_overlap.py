"""The near-duplicate measure behind the clean test split (training/data/translation_overlap.py)."""

from __future__ import annotations

from training.data.translation_overlap import LEAK_THRESHOLD, max_overlaps, ngrams
from training.evaluate.translation import subset_scores

TRAIN = [
    "Le roi de Tyr envoya des serviteurs vers Salomon avec de l'or et des bois précieux",
    "et la reine de Saba entendit parler de la renommée de Salomon au sujet du nom de l'Éternel",
    "Au commencement Dieu créa les cieux et la terre",
]


def test_a_verse_copied_from_one_training_verse_is_leaked() -> None:
    held_out = "La reine de Saba entendit parler de la renommée de Salomon"
    (overlap,) = max_overlaps([held_out], TRAIN)
    assert overlap.train_index == 1
    assert overlap.share == 1.0 and overlap.leaked


def test_the_share_is_counted_inside_one_training_verse_not_summed_over_verses() -> None:
    # 4 of its 4-grams come from verse 0 and 4 from verse 2 (none cross the seam): 8 of 15 shared in all,
    # more than half, but no single training verse holds half, so the verse is clean.
    held_out = ("des serviteurs vers Salomon avec de l'or", "nous lisons encore ici que",
                "Dieu créa les cieux et la terre")
    text = " ".join(held_out)
    (overlap,) = max_overlaps([text], TRAIN)
    total = len(ngrams(text))
    assert overlap.share < LEAK_THRESHOLD and not overlap.leaked
    assert overlap.share == max(len(ngrams(text) & ngrams(t)) for t in TRAIN) / total


def test_case_and_punctuation_do_not_hide_a_copy() -> None:
    (overlap,) = max_overlaps(["AU COMMENCEMENT, DIEU CRÉA LES CIEUX ET LA TERRE."], TRAIN)
    assert overlap.train_index == 2 and overlap.leaked


def test_a_verse_too_short_for_a_4_gram_or_sharing_nothing_is_clean() -> None:
    short, unrelated = max_overlaps(["Jésus pleura.", "Une phrase moderne sur un train en retard ce matin"], TRAIN)
    assert (short.share, short.train_index, short.leaked) == (0.0, -1, False)
    assert (unrelated.share, unrelated.train_index) == (0.0, -1)


def test_ties_go_to_the_earliest_training_verse_whatever_the_order_of_counting() -> None:
    twins = [TRAIN[2], "x " + TRAIN[2]]
    (overlap,) = max_overlaps([TRAIN[2]], twins)
    assert overlap.train_index == 0


def test_subset_scores_score_only_the_kept_verses() -> None:
    references = ["le chat dort sur le tapis rouge", "un tout autre texte sans rapport aucun"]
    outputs = {"greedy": ["le chat dort sur le tapis rouge", "rien"]}
    kept = subset_scores(outputs, ["the cat", "another"], references, [True, False])
    dropped = subset_scores(outputs, ["the cat", "another"], references, [False, True])
    assert kept["n"] == 1 and kept["greedy"]["bleu"] == 100.0
    assert dropped["n"] == 1 and dropped["greedy"]["bleu"] < 10.0
