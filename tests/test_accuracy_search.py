"""The accuracy search's policy (which layer counts it tries, when it stops), as pure functions."""

from __future__ import annotations

from fat_deploy.exporters.accuracy_search import SearchStep, search, step_sizes, summary_line


def test_step_sizes_double_up_to_half_of_the_ranked_layers() -> None:
    assert step_sizes(0) == [] and step_sizes(1) == [1] and step_sizes(2) == [1]
    assert step_sizes(10) == [1, 2, 4, 5] and step_sizes(64) == [1, 2, 4, 8, 16, 32]


def _attempts(drops: dict[int, float], passing: int | None = None, broken: int | None = None):  # type: ignore[no-untyped-def]
    tried: list[int] = []

    def attempt(layers: list[str]) -> SearchStep:
        tried.append(len(layers))
        return SearchStep(len(layers), len(layers) == passing, drops.get(len(layers), 3.0), 1.4, 100, 1.0,
                          "conversion failed" if len(layers) == broken else None)
    return attempt, tried


def test_the_search_stops_at_the_first_step_that_holds_or_breaks_or_stops_helping() -> None:
    ranking = [f"layer{i}" for i in range(40)]
    attempt, tried = _attempts({1: 2.5, 2: 1.8, 4: 0.6}, passing=4)
    steps = search(ranking, attempt, first_drop=3.0)
    assert tried == [1, 2, 4] and steps[-1].passed
    attempt, tried = _attempts({}, broken=2)
    assert [s.kept_float for s in search(ranking, attempt, first_drop=3.0)] == [1, 2] and tried == [1, 2]
    attempt, tried = _attempts({1: 2.0, 2: 2.4, 4: 2.1, 8: 1.5})  # two steps in a row no better than 2.0: stop
    search(ranking, attempt, first_drop=3.0)
    assert tried == [1, 2, 4]
    attempt, tried = _attempts({1: 2.0, 2: 2.4, 4: 1.9, 8: 1.7, 16: 1.5, 20: 1.2})  # improving: every step
    search(ranking, attempt, first_drop=3.0)
    assert tried == [1, 2, 4, 8, 16, 20]


def test_the_summary_line_says_what_was_kept_and_what_it_cost() -> None:
    first = SearchStep(0, False, 2.6, 1.62, 100, 0.0)
    held = SearchStep(8, True, 0.4, 1.5, 104, 20.0)
    line = summary_line(first, [held], [f"layer{i}" for i in range(8)])
    assert line == ("accuracy search: kept 8 layer(s) float: layer0, layer1, layer2, layer3 (+4 more); top-1 drop "
                    "2.6 -> 0.4 points; speed 1.62x -> 1.50x the float file")
