"""YAML files validated by a pydantic model, every error naming its file, line and field
(the policies file, the paging routes file)."""

from __future__ import annotations

from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def line_of(node: yaml.Node, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the deepest node of ``loc`` (a pydantic error location) that exists."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
    return node.start_mark.line + 1


def validate_yaml(text: str, model: type[Model], source: str, error: type[Exception], what: str) -> Model:
    """``model`` from the YAML ``text``; raises ``error`` with one line per problem:
    ``source:line: field: message``.

    >>> from pydantic import BaseModel
    >>> class M(BaseModel):
    ...     n: int
    >>> try:
    ...     validate_yaml("# c\\nn: many\\n", M, "m.yaml", ValueError, "example")
    ... except ValueError as exc:
    ...     print(exc)
    invalid example file:
      m.yaml:2: n: Input should be a valid integer, unable to parse string as an integer
    """
    try:
        root = yaml.compose(text)
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {exc}") from exc
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            line = line_of(root, loc) if root is not None else 1
            field = ".".join(str(p) for p in loc) or "(file)"
            lines.append(f"{source}:{line}: {field}: {err['msg']}")
        raise error(f"invalid {what} file:\n  " + "\n  ".join(lines)) from None
