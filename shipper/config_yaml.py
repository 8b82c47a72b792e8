"""Reading config YAML with positions: every key path's `line:column`, duplicated keys refused.

`yaml.safe_load` forgets where things were and lets a second `exporters:` block silently replace the
first. `read_yaml` composes the node tree itself, so it can (1) refuse a key written twice in one mapping,
naming both lines, and (2) remember the position of every key path (`exporters.out.queue`,
`processors[0].rate`, the same spelling the loader's problems use), which `locate` then puts in front of
each problem: `FILE:LINE:COLUMN: key.path: what was expected`, as YAML syntax errors already read.
`${VAR}` substitution happens after, on the built values, so it is unaffected.
"""

from __future__ import annotations

from typing import Any

import yaml

from shipper.errors import ConfigError

__all__ = ["Marks", "locate", "read_yaml"]

Marks = dict[str, tuple[int, int]]
"""Key path -> (line, column), both 1-based: where that key (or list item) is written."""


def _walk(node: yaml.Node, path: str, marks: Marks, problems: list[str], source: str, stack: set[int]) -> None:
    if id(node) in stack:  # a recursive alias (`&a [*a]`): its positions are already known
        return
    stack.add(id(node))
    try:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, yaml.Node] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                name = str(key.value)
                here = f"{path}.{name}" if path else name
                first = seen.get(name)
                if first is not None:
                    problems.append(f"{source}:{key.start_mark.line + 1}:{key.start_mark.column + 1}: {here}: "
                                    f"duplicated key; it is also written at line {first.start_mark.line + 1}, column "
                                    f"{first.start_mark.column + 1} (YAML would keep only the last): merge the two")
                    continue
                seen[name] = key
                marks[here] = (key.start_mark.line + 1, key.start_mark.column + 1)
                _walk(value, here, marks, problems, source, stack)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                here = f"{path}[{i}]"
                marks[here] = (item.start_mark.line + 1, item.start_mark.column + 1)
                _walk(item, here, marks, problems, source, stack)
    finally:
        stack.discard(id(node))


def read_yaml(text: str, source: str) -> tuple[Any, Marks]:
    """The data of YAML `text` and the position of every key path; raises ConfigError (with positions)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        marks: Marks = {}
        problems: list[str] = []
        _walk(node, "", marks, problems, source, set())
        if problems:
            raise ConfigError(problems)
        return loader.construct_document(node), marks
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: invalid YAML: {problem}"]) from exc
    finally:
        loader.dispose()


def _key_path(problem: str) -> str:
    """The key path a loader problem starts with (`exporters.out.queue: expected ...` -> that path)."""
    return problem.split(": ", 1)[0].strip()


def locate(problem: str, marks: Marks, source: str) -> str:
    """`FILE:LINE:COLUMN: problem`, at the problem's key path or the nearest enclosing one that is written."""
    path = _key_path(problem)
    while path:
        if path in marks:
            line, column = marks[path]
            return f"{source}:{line}:{column}: {problem}"
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return f"{source}: {problem}"
