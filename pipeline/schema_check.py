"""A yes/no check of a document against the recipe schema, without importing jsonschema.

Importing jsonschema costs about 60 ms (referencing, rpds, attrs, format checkers): a quarter of
a no-op rebuild. Most recipes are valid, and for a valid one a yes is all we need. So
`conforms` checks exactly the JSON Schema 2020-12 keywords our schema uses; only when it says no
does recipe.py ask jsonschema for the full list of problems, so error messages are unchanged.

It never guesses: a keyword it does not implement, or a `$ref` outside this document, raises
Unsupported, and the caller falls back to jsonschema. tests/test_recipe.py checks it agrees
with jsonschema on every shipped recipe and on thousands of mutated ones, and that it implements
every keyword schemas/recipe.schema.json uses.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any


class Unsupported(Exception):
    """The schema uses something this checker does not implement: ask jsonschema."""


# Keywords that never affect validity.
ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples",
                         "deprecated", "readOnly", "writeOnly"})
_TYPES = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "number": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
    # As jsonschema: 1.0 is an integer.
    "integer": lambda x: (isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, float) and x.is_integer()),
}


def conforms(instance: Any, schema: dict) -> bool:
    """True if `instance` is valid against `schema` (a whole document: `$ref`s resolve in it)."""
    return _valid(instance, schema, schema)


def _valid(x: Any, s: Any, root: dict) -> bool:
    if s is True or s == {}:
        return True
    if s is False:
        return False
    for key, arg in s.items():
        if key in ANNOTATIONS or key in ("then", "else"):
            continue
        check = _KEYWORDS.get(key)
        if check is None:
            raise Unsupported(key)
        if not check(x, arg, s, root):
            return False
    return True


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(i, j) for i, j in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if _number(a) and _number(b):
        return a == b
    return type(a) is type(b) and a == b


def _type(x, arg, s, root) -> bool:
    names = [arg] if isinstance(arg, str) else arg
    if any(n not in _TYPES for n in names):
        raise Unsupported(f"type {arg}")
    return any(_TYPES[n](x) for n in names)


def _properties(x, arg, s, root) -> bool:
    return not isinstance(x, dict) or all(_valid(x[k], sub, root) for k, sub in arg.items() if k in x)


def _additional(x, arg, s, root) -> bool:
    if not isinstance(x, dict):
        return True
    if "patternProperties" in s:
        raise Unsupported("additionalProperties with patternProperties")
    known = s.get("properties", {})
    return all(_valid(v, arg, root) for k, v in x.items() if k not in known)


def _required(x, arg, s, root) -> bool:
    return not isinstance(x, dict) or all(k in x for k in arg)


def _items(x, arg, s, root) -> bool:
    if "prefixItems" in s:
        raise Unsupported("items with prefixItems")
    return not isinstance(x, list) or all(_valid(i, arg, root) for i in x)


def _if(x, arg, s, root) -> bool:
    branch = "then" if _valid(x, arg, root) else "else"
    return _valid(x, s.get(branch, True), root)


def _ref(x, arg, s, root) -> bool:
    return _valid(x, _resolve(arg, root), root)


def _resolve(ref: str, root: dict) -> Any:
    if not ref.startswith("#/"):
        raise Unsupported(f"$ref {ref}")
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise Unsupported(f"$ref {ref}")
        node = node[part]
    return node


@lru_cache(maxsize=64)
def _regex(pattern: str) -> re.Pattern:
    return re.compile(pattern)


_KEYWORDS = {
    "type": _type,
    "enum": lambda x, arg, s, root: any(_equal(x, v) for v in arg),
    "const": lambda x, arg, s, root: _equal(x, arg),
    "properties": _properties,
    "additionalProperties": _additional,
    "required": _required,
    "items": _items,
    "minItems": lambda x, arg, s, root: not isinstance(x, list) or len(x) >= arg,
    "minLength": lambda x, arg, s, root: not isinstance(x, str) or len(x) >= arg,
    "maxLength": lambda x, arg, s, root: not isinstance(x, str) or len(x) <= arg,
    "pattern": lambda x, arg, s, root: not isinstance(x, str) or _regex(arg).search(x) is not None,
    "minimum": lambda x, arg, s, root: not _number(x) or x >= arg,
    "maximum": lambda x, arg, s, root: not _number(x) or x <= arg,
    "exclusiveMinimum": lambda x, arg, s, root: not _number(x) or x > arg,
    "exclusiveMaximum": lambda x, arg, s, root: not _number(x) or x < arg,
    "allOf": lambda x, arg, s, root: all(_valid(x, sub, root) for sub in arg),
    "anyOf": lambda x, arg, s, root: any(_valid(x, sub, root) for sub in arg),
    "oneOf": lambda x, arg, s, root: sum(_valid(x, sub, root) for sub in arg) == 1,
    "not": lambda x, arg, s, root: not _valid(x, arg, root),
    "if": _if,
    "$ref": _ref,
}
KEYWORDS = frozenset(_KEYWORDS) | ANNOTATIONS | {"then", "else"}
