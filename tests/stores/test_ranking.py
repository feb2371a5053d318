"""The one top-k loop both stores use: a cut never splits a tie, grouping finds k groups."""

from __future__ import annotations

from service.store.ranking import Candidate, pick, top_k


def ranked_source(scores: list[float], labels: list[str | None] | None = None):
    """A backend's fetch over fixed scores (ties in position order), recording the windows."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    labels = labels or [None] * len(scores)
    windows: list[int] = []

    def fetch(window: int) -> tuple[list[Candidate], bool]:
        windows.append(window)
        part = order[:window]
        return [Candidate(scores[i], i, labels[i]) for i in part], window >= len(scores)

    return fetch, windows


def test_a_tie_at_the_cut_widens_until_it_is_passed() -> None:
    scores = [0.9] + [0.5] * 10 + [0.1] * 5  # k=3 cuts inside ten equal scores
    fetch, windows = ranked_source(scores)
    chosen = top_k(fetch, 3, grouped=False)
    assert [c.key for c in chosen] == [0, 1, 2]  # the tie resolved in the backend's own order
    assert windows == [4, 8, 16]  # 4 and 8 end inside the tie; 16 reaches past it


def test_no_tie_stops_at_the_first_window() -> None:
    fetch, windows = ranked_source([0.9, 0.8, 0.7, 0.6, 0.5])
    assert [c.key for c in top_k(fetch, 2, grouped=False)] == [0, 1]
    assert windows == [3]


def test_grouping_returns_one_per_label_and_unlabelled_items_alone() -> None:
    scores = [1.0 - i / 100 for i in range(100)]
    labels = ["a" if i < 60 else ("b" if i < 90 else None) for i in range(100)]
    fetch, windows = ranked_source(scores, labels)
    chosen = top_k(fetch, 4, grouped=True)
    assert [c.key for c in chosen] == [0, 60, 90, 91]
    assert windows == [32, 128]  # the first 32 are all "a": widened x4


def test_fewer_than_k_when_the_source_runs_out() -> None:
    fetch, _ = ranked_source([0.3, 0.2])
    assert [c.key for c in top_k(fetch, 5, grouped=False)] == [0, 1]
    empty, _ = ranked_source([])
    assert top_k(empty, 5, grouped=True) == []


def test_pick_groups_by_label() -> None:
    ranked = [Candidate(0.9, 1, "x"), Candidate(0.8, 2, "x"), Candidate(0.7, 3, None)]
    assert [c.key for c in pick(ranked, 2, grouped=True)] == [1, 3]
    assert [c.key for c in pick(ranked, 2, grouped=False)] == [1, 2]
