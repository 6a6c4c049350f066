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
    try:
        whole_tree = _check_depth(text)
        loader = _Loader(text)  # type: ignore[call-arg]  # mypy cannot see _Base's __init__
        try:
            root = loader.get_single_node()
            if root is None:
                return None, None
            if whole_tree:
                _check_tree(root)
                return root, loader.construct_document(root)
            _check_keys(root)
            return root, _plain(loader, root)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise FileProblem(_line(exc, text), _problem(exc)) from None


_STR, _MAP, _SEQ = (f"tag:yaml.org,2002:{kind}" for kind in ("str", "map", "seq"))
_KEY_TAGS = {f"tag:yaml.org,2002:{kind}" for kind in ("str", "int", "float", "bool", "null")}


def _plain(loader: Any, node: yaml.Node) -> Any:
    """What ``loader.construct_document(node)`` gives for a tree without aliases (each node
    is constructed once), ~8x faster: strings, plain mappings and sequences are built here
    (a config is mostly those), every other node by the loader's own constructors. The
    recursion is as deep as the tree, which the event stream bounded to MAX_DEPTH."""
    kind = type(node)
    if kind is yaml.ScalarNode:
        return node.value if node.tag == _STR else loader.construct_object(node)
    if kind is yaml.MappingNode and node.tag == _MAP:
        if not all(type(k) is yaml.ScalarNode and k.tag in _KEY_TAGS for k, _ in node.value):
            return loader.construct_object(node, deep=True)  # merge keys, "=", complex keys
        return {_plain(loader, k): _plain(loader, v) for k, v in node.value}
    if kind is yaml.SequenceNode and node.tag == _SEQ:
        return [_plain(loader, v) for v in node.value]
    return loader.construct_object(node, deep=True)  # sets, ordered maps, pairs, other tags


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
    seen: dict[tuple[str, str], yaml.Node] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        # by resolved tag too: `false` (a boolean) and `'false'` (a string) are two keys
        first = seen.setdefault((str(key.tag), str(key.value)), key)
        if first is not key:
            line = key.start_mark.line + 1
            raise FileProblem(
                line,
                f'duplicate key "{key.value}" (first at line {first.start_mark.line + 1},'
                f" again at line {line})",
            )
