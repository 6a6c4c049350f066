"""The config reader's own construction of a tree without aliases gives exactly what
PyYAML's safe loader gives, for every kind of YAML value."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from probed import configfile

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
keys = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=25,
)


def safe(text: str) -> Any:
    return yaml.load(text, Loader=yaml.SafeLoader)


@given(documents, st.sampled_from([False, True, None]))
@example(
    {False: None, "false": None, None: 1, "null": 2, 1: 3, "1": 4}, None
)  # same text, two keys
@settings(max_examples=300)
def test_any_document_reads_as_the_safe_loader_reads_it(doc: Any, flow: bool | None) -> None:
    text = yaml.safe_dump(doc, default_flow_style=flow)
    assert configfile.parse(text)[1] == safe(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\nb: 0x1f\nc: 1_000\nd: 0o17\ne: 12:30\nf: .inf\ng: -.nan\n",
        "when: 2026-11-01\nat: 2026-11-01T10:00:00Z\nbits: !!binary aGVsbG8=\n",
        "yes: no\non: off\n~: null\n'1': 1\n1.5: x\n",
        "base: {a: 1}\nmerged: {<<: {a: 1, b: 2}, b: 3}\n",
        "= : value key\nother: 1\n",
        "set: !!set {a, b}\nomap: !!omap [a: 1, b: 2]\npairs: !!pairs [a: 1, a: 2]\n",
        "tagged: !!str 123\nseq: !!seq [1, 2]\nmap: !!map {a: !!int '7'}\nf: !!float '1'\n",
        '"quoted": "x"\nplain: x y z\nblock: |\n  two\n  lines\nfolded: >\n  one\n  line\n',
        "- 1\n- [2, [3, {four: 4}]]\n- {}\n- []\n- ''\n-\n",
        "just a scalar\n",
    ],
)
def test_every_kind_of_value_reads_as_the_safe_loader_reads_it(text: str) -> None:
    value = configfile.parse(text)[1]
    expected = safe(text)
    if isinstance(expected, dict) and any(v != v for v in expected.values()):  # NaN
        assert repr(value) == repr(expected)
    else:
        assert value == expected


def test_an_unhashable_key_is_refused_as_the_safe_loader_refuses_it() -> None:
    text = "ok: 1\n? [a, b]\n: complex key\n"
    with pytest.raises(yaml.YAMLError, match="unhashable key"):
        safe(text)
    with pytest.raises(configfile.FileProblem, match="unhashable key"):
        configfile.parse(text)
