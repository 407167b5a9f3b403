from __future__ import annotations

import pytest

from core.stop_strings import StopStringMatcher


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopStringMatcher(stops)
    out = []
    for piece in pieces:
        out.append(matcher.feed(piece))
        if matcher.stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


@pytest.mark.parametrize(
    ("stops", "pieces", "expected"),
    [
        (["END"], ["abc", "E", "N", "D", "xyz"], ("abc", True)),
        (["END"], ["abcEN", "Dxyz"], ("abc", True)),
        (["END"], ["abcE", "Nope"], ("abcENope", False)),
        (["\n\n", "User:"], ["Hi", "\n", "Us", "er: x"], ("Hi\n", True)),
        (["ab", "b"], ["xab"], ("x", True)),  # the earliest match wins
        ([], ["a", "b"], ("ab", False)),
    ],
)
def test_stop_strings(stops: list[str], pieces: list[str], expected: tuple[str, bool]) -> None:
    assert run(stops, pieces) == expected


def test_held_text_is_released_when_it_cannot_become_a_stop() -> None:
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("hello ST") == "hello "
    assert matcher.feed("ART") == "START"
