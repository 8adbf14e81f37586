"""Building engine search queries and waiting with a deadline."""

from __future__ import annotations

import itertools

import pytest

from shared.engine import search
from shared.engine.errors import EngineTimeout
from shared.engine.polling import wait_for


def test_any_of_joins_and_dedups() -> None:
    assert search.any_of("name", ["web01", "db*", "web01", ""]) == ["name=web01 or name=db*"]
    assert search.any_of("tag", []) == []


def test_values_with_spaces_are_quoted() -> None:
    assert search.any_of("cluster", ["my cluster"]) == ['cluster="my cluster"']


def test_long_selections_are_split() -> None:
    names = [f"vm{i}" for i in range(search.MAX_TERMS + 3)]
    queries = search.any_of("name", names)
    assert len(queries) == 2
    assert queries[1] == " or ".join(f"name=vm{i}" for i in range(search.MAX_TERMS, len(names)))


def test_wait_for_returns_the_first_truthy_value() -> None:
    counter = itertools.count()
    assert (
        wait_for(lambda: next(counter) >= 2 and "ok", timeout_s=5, what="x", interval_s=0) == "ok"
    )


def test_wait_for_times_out_clearly() -> None:
    with pytest.raises(EngineTimeout, match="waiting for the thing") as info:
        wait_for(lambda: None, timeout_s=0.05, what="the thing", interval_s=0.01)
    assert info.value.retryable
