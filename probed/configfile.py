"""Read a config file as a person wrote it, and refuse what no person writes.

A config file is read by an operator's hand but also, on ``SIGHUP``, by a
running daemon that must neither die nor freeze on it. So before anything is
validated, this module bounds what a file may cost: a regular file (a FIFO
would block forever), at most :data:`MAX_BYTES`, UTF-8, nesting at most
:data:`MAX_DEPTH` deep, aliases expanding to at most :data:`MAX_NODES` nodes
("billion laughs"), integers of at most :data:`MAX_DIGITS` digits, and no key
twice in one mapping (YAML would silently keep the last one). Every refusal
is a :class:`FileProblem` with the line it is about.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 32 * 1024 * 1024  # a config with 100 000 checks is ~10 MB
MAX_DEPTH = 32  # the deepest real config is ~7 levels
MAX_NODES = 4_000_000  # after alias expansion; ~20 nodes per check, 200 000 checks
MAX_DIGITS = 30  # no config number needs more; Python refuses > 4300 with a traceback


class FileProblem(Exception):
    """Why a config file cannot be read; ``line`` is 1-based (1 when the whole file is meant)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def read_text(path: Path) -> str:
    """The file's text; never blocks on a FIFO, never reads more than MAX_BYTES + 1 bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FileProblem(1, f"cannot read config: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise FileProblem(1, f"cannot read config: {kind}")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise FileProblem(1, f"cannot read config: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise FileProblem(1, f"config file larger than {MAX_BYTES} bytes")
    return decode(data)


def decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FileProblem(
            line, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


class _Bounded(yaml.constructor.SafeConstructor):
    """Construction with a digit bound on integers and a line on every bad value."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        digits = sum(ch.isdigit() for ch in str(node.value))
        if digits > MAX_DIGITS:
            raise FileProblem(
                node.start_mark.line + 1, f"a number with {digits} digits (at most {MAX_DIGITS})"
            )
        return super().construct_yaml_int(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError) as exc:  # e.g. the date 2026-13-45
            raise FileProblem(node.start_mark.line + 1, f"invalid value: {exc}") from None


_Bounded.add_constructor("tag:yaml.org,2002:int", _Bounded.construct_yaml_int)  # type: ignore[type-var]  # a mixin of the loaders below

# libyaml (PyYAML's C extension) composes 100 000 checks ~5x faster than pure Python
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Bounded, _Base):  # type: ignore[misc]  # _Base is CSafeLoader or SafeLoader
    """The fastest safe loader available, with the bounds above."""


def _check_depth(text: str) -> bool:
    """Refuse deep nesting from the event stream (the parser is iterative) before the
    composer, which recurses, sees it. True when the tree needs :func:`_check_tree`
    (aliases, or more events than MAX_NODES); else only its keys need a look."""
    depth = events = 0
    aliased = False
    for event in yaml.parse(text, Loader=_Base):
        events += 1
        if isinstance(event, yaml.AliasEvent):
            aliased = True
        elif isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else 1
                raise FileProblem(line, f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return aliased or events > MAX_NODES


def parse(text: str) -> tuple[yaml.Node | None, Any]:
    """The composed node tree (for line numbers) and the plain data it stands for."""
    if _FAST and "*" not in text:  # no alias: no expansion to measure
        try:
            return _parse_plain(text)
        except (_Unusual, yaml.YAMLError, FileProblem):
            pass  # the full path below refuses it with its own message, or reads it
    return _parse_full(text)


def _parse_full(text: str) -> tuple[yaml.Node | None, Any]:
    try:
        whole_tree = _check_depth(text)
        loader = _Loader(text)  # type: ignore[call-arg]  # mypy cannot see _Base's __init__
        try:
            root = loader.get_single_node()
            if root is not None:
                (_check_tree if whole_tree else _check_keys)(root)
            return root, None if root is None else loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise FileProblem(_line(exc, text), _problem(exc)) from None


class _Unusual(Exception):
    """Something :func:`_parse_plain` leaves to the full path: too deep or too many nodes
    (refused there with a line), a key twice, a merge key, a tag other than str, int,
    float, bool, null, map or seq."""


_STR, _MAP, _SEQ = (f"tag:yaml.org,2002:{kind}" for kind in ("str", "map", "seq"))


def _nesting_bounded() -> bool:
    """libyaml (0.2.5 and later) refuses nesting over 1 000 levels while it scans, so its
    recursive composer never goes deeper: the tree may then be composed before its depth
    is known. The pure-Python composer, or an older libyaml, needs the event pass first."""
    if _Base is yaml.SafeLoader:
        return False
    deep = "[" * 1001 + "]" * 1001
    try:
        loader = _Base(deep)
        try:
            loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError:
        return True
    return False


def _parse_plain(text: str) -> tuple[yaml.Node | None, Any]:
    """The common config - no alias, no merge key, no special tag, each key once - in one
    walk of the composed tree that bounds it and builds its data (~3x faster than the
    event pass, the key check and PyYAML's constructor one after the other)."""
    loader = _Loader(text)  # type: ignore[call-arg]  # mypy cannot see _Base's __init__
    try:
        root = loader.get_single_node()
        return root, None if root is None else _Plain(loader).value(root, 0)
    finally:
        loader.dispose()


class _Plain:
    __slots__ = ("loader", "nodes")

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.nodes = 0

    def value(self, node: yaml.Node, depth: int) -> Any:
        self.nodes += 1
        if isinstance(node, yaml.ScalarNode):
            return node.value if node.tag == _STR else self.loader.construct_object(node)
        depth += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise _Unusual
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
            mapping = {}
            for key, item in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag != _STR:
                    raise _Unusual
                mapping[key.value] = self.value(item, depth)
            if len(mapping) != len(node.value):
                raise _Unusual  # a key twice
            self.nodes += len(mapping)
            return mapping
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
            return [self.value(item, depth) for item in node.value]
        raise _Unusual


_FAST = _nesting_bounded()


def _problem(exc: yaml.YAMLError) -> str:
    if "maximum nesting depth" in str(exc):  # libyaml's own bound (1 000), above ours
        return f"nested deeper than {MAX_DEPTH} levels"
    if isinstance(exc, yaml.reader.ReaderError):  # its str() spans lines
        return f"unacceptable character #x{exc.character:04x}: {exc.reason}"
    return str(getattr(exc, "problem", None) or exc).splitlines()[0]


def _line(exc: yaml.YAMLError, text: str) -> int:
    if isinstance(exc, yaml.reader.ReaderError):
        return text[: exc.position].count("\n") + 1
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return int(mark.line) + 1 if mark is not None else 1


def _check_tree(root: yaml.Node) -> None:
    """Duplicate keys, and the size and depth of the tree with every alias expanded.

    Iterative, and each node is measured once however often it is aliased, so
    a billion laughs costs as much as its text.
    """
    size: dict[int, int] = {}  # node id -> nodes it stands for, aliases expanded
    depth: dict[int, int] = {}
    visiting: set[int] = set()  # the current path: an alias back into it is a loop
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        children = _children(node)
        if done:
            visiting.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            depth[id(node)] = 1 + max((depth[id(c)] for c in children), default=0)
            _bounded(node, size[id(node)], depth[id(node)])
        elif id(node) in visiting:
            raise FileProblem(node.start_mark.line + 1, "an alias refers to itself")
        elif id(node) not in size:
            visiting.add(id(node))
            if isinstance(node, yaml.MappingNode):
                _no_duplicate_keys(node)
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in size)


def _check_keys(root: yaml.Node) -> None:
    """Duplicate keys of a tree without aliases: its size and depth are the event
    stream's, bounded already (the same order of visits as :func:`_check_tree`)."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            _no_duplicate_keys(node)
        stack.extend(_children(node))


def _bounded(node: yaml.Node, size: int, depth: int) -> None:
    line = node.start_mark.line + 1
    if size > MAX_NODES:
        raise FileProblem(line, f"aliases expand to more than {MAX_NODES} values (refused)")
    if depth > MAX_DEPTH:
        raise FileProblem(line, f"nested deeper than {MAX_DEPTH} levels (aliases included)")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _no_duplicate_keys(node: yaml.MappingNode) -> None:
    seen: dict[str, yaml.Node] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        first = seen.setdefault(str(key.value), key)
        if first is not key:
            line = key.start_mark.line + 1
            raise FileProblem(
                line,
                f'duplicate key "{key.value}" (first at line {first.start_mark.line + 1},'
                f" again at line {line})",
            )
