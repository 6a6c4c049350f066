"""The config file's one-walk reading of a plain YAML tree gives exactly what the full path
(event pass, key check, PyYAML's constructor) gives: the same data, or the same refusal."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from probed import configfile
from probed.configfile import MAX_DEPTH, FileProblem

pytestmark = pytest.mark.skipif(
    not configfile._FAST, reason="libyaml without its nesting bound: the full path only"
)


def nested(levels: int) -> list[Any]:
    inner: list[Any] = []
    for _ in range(levels - 1):
        inner = [inner]
    return inner


def outcome(read: Any, text: str) -> tuple[str, Any]:
    try:
        return "data", read(text)[1]
    except FileProblem as exc:
        return "refused", (exc.line, exc.message)


def same(text: str) -> tuple[str, Any]:
    fast, full = outcome(configfile.parse, text), outcome(configfile._parse_full, text)
    assert fast == full
    return fast


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "a: 1\nb: [x, 'y', 2.5, null, true]\n",
            ("data", {"a": 1, "b": ["x", "y", 2.5, None, True]}),
        ),
        ("<<: {a: 1}\nb: 2\n", ("data", {"a": 1, "b": 2})),  # a merge key without an alias
        ("a: &x 1\nb: 2\n", ("data", {"a": 1, "b": 2})),  # an anchor nobody refers to
        (
            "1: a\n'1': b\n",
            ("refused", (2, 'duplicate key "1" (first at line 1, again at line 2)')),
        ),
        (
            "a: 1\nb: 2\na: 3\n",
            ("refused", (3, 'duplicate key "a" (first at line 1, again at line 3)')),
        ),
        ("at: 2026-12-02\n", ("data", {"at": __import__("datetime").date(2026, 12, 2)})),
        # the document's mapping is the first level: MAX_DEPTH - 1 lists inside it fit
        (
            "x: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH,
            ("refused", (1, f"nested deeper than {MAX_DEPTH} levels")),
        ),
        (
            "x: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1),
            ("data", {"x": nested(MAX_DEPTH - 1)}),
        ),
        ("x: !!binary aGk=\n", ("data", {"x": b"hi"})),
        ("x: !!set {a, b}\n", ("data", {"x": {"a", "b"}})),
        ("? [a, b]\n: 1\n", ("refused", (1, "found unhashable key"))),
        ("x: " + "9" * 40 + "\n", ("refused", (1, "a number with 40 digits (at most 30)"))),
        ("", ("data", None)),
        ("a: [1\n", ("refused", (2, "did not find expected ',' or ']'"))),
    ],
)
def test_worked_examples_read_the_same_both_ways(text: str, expected: tuple[str, Any]) -> None:
    assert same(text) == expected


_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_keys = st.text(max_size=8) | st.integers(-3, 3) | st.sampled_from(["<<", "=", "on", "1"])
_trees = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(data=_trees, flow=st.booleans())
def test_generated_documents_read_the_same_both_ways(data: object, flow: bool) -> None:
    same(yaml.safe_dump(data, allow_unicode=True, default_flow_style=flow))


_fragments = st.sampled_from(
    [
        "services:\n",
        "  web: {a: 1, a: 2}\n",
        "- [x, {y: z}]\n",
        "a: 1\n",
        "a: 1\n",
        "<<: {k: v}\n",
        "&a [1, 2]\n",
        "x: !!str 3\n",
        "x: !!python/object:os.system ls\n",
        "? [a, b]\n: 1\n",
        "- - - -\n",
        "= : 3\n",
        "%YAML 1.1\n---\n",
        "---\n",
        "interval: 0x7fffffffffff\n",
        "timezone: 2026-02-30\n",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
        "  - b\n",
        "    c: 'd'\n",
    ]
)


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(_fragments | st.text(max_size=20), max_size=10))
def test_generated_texts_read_the_same_both_ways(parts: list[str]) -> None:
    same("".join(parts))
