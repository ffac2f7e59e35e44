"""How the public modules export their names: each imported on first use, and named after the public module,
as httpx does, so that reprs, docs and pickles show where users import it from, not the private module."""

from collections.abc import Mapping
from importlib import import_module
from types import FunctionType
from typing import Any, get_origin

__all__ = ["first_use", "named"]


def named(value: Any, module: str) -> Any:
    """`value`, its `__module__` set to `module` if it has a name of its own (a class, a function, an alias)."""
    if isinstance(value, type | FunctionType) or get_origin(value) is not None:
        value.__module__ = module
    return value


def first_use(namespace: dict[str, Any], name: str, modules: Mapping[str, str]) -> Any:
    """The public module `namespace`'s `name`, imported from its module in `modules` (relative to the package)
    and kept in `namespace`, so that later lookups skip the module's `__getattr__`."""
    module = modules.get(name)
    if module is None:
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
    value = namespace[name] = named(getattr(import_module(module, __package__), name), namespace["__name__"])
    return value
