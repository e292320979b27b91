"""Duplicate mapping keys in YAML, refused the way the Docker CLI's YAML parser refuses them.

pyyaml silently keeps the last of two equal keys, so a second `image:` under a service (or a
second `workers:` in a cluster file) would quietly win over the first. Keys brought in by a
`<<` merge are overrides by design and are not duplicates.
"""
from __future__ import annotations

import yaml

from inventory.errors import InputError


def refuse_duplicate_keys(node, file: str) -> None:
    """Raise InputError naming both lines of the first duplicate key under `node`."""
    stack = [node] if node is not None else []
    seen_nodes: set[int] = set()
    while stack:
        n = stack.pop()
        if id(n) in seen_nodes:     # aliases share nodes; anchors can even form cycles
            continue
        seen_nodes.add(id(n))
        if isinstance(n, yaml.MappingNode):
            first: dict = {}
            for key_node, value_node in n.value:
                stack.append(value_node)
                if key_node.tag == "tag:yaml.org,2002:merge" or \
                        not isinstance(key_node, yaml.ScalarNode):
                    continue
                line = key_node.start_mark.line + 1
                if key_node.value in first:
                    raise InputError(f'duplicate key "{key_node.value}" (first at line '
                                     f'{first[key_node.value]}); remove one of the two',
                                     file=file, path=f"line {line}")
                first[key_node.value] = line
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
