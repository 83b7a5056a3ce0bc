"""The libyaml-backed YamlDocument composes exactly the tree the pure-Python loader does."""

from __future__ import annotations

import pytest
import yaml

from leviathan_dagster.core.config import yaml_nodes as yamlnodes
from leviathan_dagster.core.config.yaml_nodes import YamlDocument
from leviathan_dagster.core.errors import ConfigError

TEXTS = [
    "tasks:\n  - id: a\n    title: plain\n    status: pending  # comment\n    ready: true\n",
    'tasks:\r\n  - id: a\r\n    title: "\U0001f600 \u00e9"\r\n    status: pending\r\n',
    "a: &x [1, {b: \"q\", c: 'r'}]\nd: *x\ne: |\n  block\nf: >-\n  folded\ng: !!str 3\nh: ~\ni:\n",
]


def _shape(node: yaml.Node, seen: set[int] | None = None) -> object:
    seen = set() if seen is None else seen
    marks = tuple((m.line, m.column, m.index) for m in (node.start_mark, node.end_mark))
    style = getattr(node, "style", None), getattr(node, "flow_style", None)
    head = (type(node).__name__, node.tag, *style, marks)
    if isinstance(node, yaml.ScalarNode) or id(node) in seen:
        return (*head, node.value if isinstance(node, yaml.ScalarNode) else "alias")
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        return (*head, [_shape(item, seen) for item in node.value])
    return (*head, [(_shape(k, seen), _shape(v, seen)) for k, v in node.value])


def _pure_root(text: str) -> yaml.Node:
    loader = yaml.SafeLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def test_the_fast_loader_is_used_when_pyyaml_has_libyaml() -> None:
    assert yaml.__with_libyaml__, "PyYAML without libyaml: backlogs parse 10x slower"
    assert yamlnodes._FAST_LOADER is yaml.CSafeLoader


@pytest.mark.parametrize("text", TEXTS)
def test_fast_tree_equals_the_pure_python_tree(text: str) -> None:
    assert _shape(YamlDocument(text, "x.yaml").root) == _shape(_pure_root(text))


def test_plain_scalars_keep_style_none_for_write_back() -> None:
    # libyaml reports plain scalars as style '': the backlog write-back only edits style None in place.
    root = YamlDocument("a: b\n", "x.yaml").root
    assert root.value[0][1].style is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [1\nb: 2\n", "x.yaml:2:2: invalid YAML: while parsing a flow sequence expected ',' or ']'"),
        ("a: b: c\n", "x.yaml:1:5: invalid YAML: mapping values are not allowed here"),
        ("a:\n\t- x\n", "x.yaml:2:1: invalid YAML: while scanning for the next token found character '\\t'"),
        ("x: !!python/object:os.system 1\n", "x.yaml:1:4: invalid YAML: could not determine a constructor"),
    ],
)
def test_errors_carry_the_pure_python_message(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        YamlDocument(text, "x.yaml")
    assert str(caught.value).startswith(message)
