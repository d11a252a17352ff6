"""bench.identity: pairwise precision, recall and F1 of a clustering, and cross-document clusters."""

from __future__ import annotations

from itertools import combinations

import pytest

from bench.identity import PairScores, cross_document_clusters, pairs, pairwise_scores

TRUTH = {"a1": "ana", "a2": "ana", "a3": "ana", "b1": "bruno", "b2": "bruno", "c1": "carla"}


def brute_force(predicted: dict[str, str], truth: dict[str, str]) -> tuple[int, int, int]:
    """(true, predicted, correct) pairs, by enumerating every pair."""
    both = list(combinations(sorted(truth), 2))
    same_person = {p for p in both if truth[p[0]] == truth[p[1]]}
    same_cluster = {p for p in both if predicted[p[0]] == predicted[p[1]]}
    return len(same_person), len(same_cluster), len(same_person & same_cluster)


def test_pairs_is_n_choose_2() -> None:
    assert [pairs(n) for n in range(5)] == [0, 0, 1, 3, 6]


def test_the_truth_itself_scores_one() -> None:
    scores = pairwise_scores(TRUTH, TRUTH)
    assert scores == PairScores(records=6, true_pairs=4, predicted_pairs=4, correct_pairs=4)
    assert (scores.precision, scores.recall, scores.f1) == (1.0, 1.0, 1.0)


def test_all_singletons_predict_no_pair_so_precision_is_vacuous_and_recall_zero() -> None:
    scores = pairwise_scores({key: key for key in TRUTH}, TRUTH)
    assert (scores.predicted_pairs, scores.correct_pairs) == (0, 0)
    assert (scores.precision, scores.recall, scores.f1) == (1.0, 0.0, 0.0)


def test_one_cluster_for_everyone_finds_every_pair_at_low_precision() -> None:
    scores = pairwise_scores(dict.fromkeys(TRUTH, "everyone"), TRUTH)
    assert (scores.true_pairs, scores.predicted_pairs, scores.correct_pairs) == (4, 15, 4)
    assert scores.recall == 1.0
    assert scores.precision == pytest.approx(4 / 15)
    assert scores.f1 == pytest.approx(2 * (4 / 15) / (4 / 15 + 1))


def test_a_split_and_a_false_merge() -> None:
    # ana split in two (a3 apart), bruno's b2 merged with carla.
    predicted = {"a1": "p1", "a2": "p1", "a3": "p2", "b1": "p3", "b2": "p4", "c1": "p4"}
    scores = pairwise_scores(predicted, TRUTH)
    assert (scores.true_pairs, scores.predicted_pairs, scores.correct_pairs) == brute_force(predicted, TRUTH)
    assert (scores.precision, scores.recall) == (0.5, 0.25)
    assert scores.f1 == pytest.approx(2 * 0.5 * 0.25 / 0.75)


def test_only_singletons_in_truth_make_recall_vacuous() -> None:
    truth = {"x": "1", "y": "2", "z": "3"}
    assert pairwise_scores({"x": "p", "y": "p", "z": "q"}, truth).precision == 0.0
    assert pairwise_scores({"x": "p", "y": "p", "z": "q"}, truth).recall == 1.0
    assert pairwise_scores(truth, truth).f1 == 1.0


def test_cluster_labels_do_not_matter_only_the_partition() -> None:
    relabelled = {key: f"profile-{person}" for key, person in TRUTH.items()}
    assert pairwise_scores(relabelled, TRUTH) == pairwise_scores(TRUTH, TRUTH)


def test_predicted_and_truth_must_cover_the_same_records() -> None:
    with pytest.raises(ValueError, match="same records"):
        pairwise_scores({"a1": "p"}, TRUTH)


def test_clusters_with_two_documents_are_counted_once_each() -> None:
    documents = {"a1": "11111111111", "a2": "11111111111", "a3": None, "b1": "22222222222", "b2": None}
    documents |= {"c1": "33333333333"}
    assert cross_document_clusters(TRUTH, documents) == 0
    assert cross_document_clusters(dict.fromkeys(TRUTH, "everyone"), documents) == 1
    split = {"a1": "p", "b1": "p", "a2": "q", "c1": "q", "a3": "r", "b2": "r"}
    assert cross_document_clusters(split, documents) == 2
