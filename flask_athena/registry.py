"""The ``@expose`` whitelist and per-class tables of exposed methods.

Only methods marked with :func:`expose` (on the class or on a base class) are
callable from the browser. Names starting with ``_`` can never be exposed, and
the caller passes the names its base class reserves (``LiveElement``'s own
API), so neither can be reached whatever a subclass does. A missing method and
an unexposed one raise the same :class:`~flask_athena.errors.MethodNotFound`,
so probing from the browser learns nothing.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Callable, TypeVar, Union

from .errors import BadArguments, MethodNotFound

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__athena_exposed__"
_tables: dict[type, frozenset[str]] = {}
#: function -> (signature, type hints, positional fast path or None)
_signatures: dict[Any, tuple[inspect.Signature, dict[str, Any], _Positional | None]] = {}
#: (class, name) -> the exposed function ``resolve`` found
_resolved: dict[tuple[type, str], Callable[..., Any]] = {}


class _Positional(typing.NamedTuple):
    """A signature with only positional-or-keyword parameters."""

    params: tuple[tuple[str, Any], ...]  # (name, hint or None), in order
    required: int  # how many have no default


def expose(func: F) -> F:
    """Mark a method as callable from the browser.

    Works as a decorator (``@expose``) and in the tutorial's form
    (``say = expose(say)``). Raises :class:`TypeError` for anything that is not
    a plain function (properties, static/class methods, non-callables) and
    :class:`ValueError` for private or dunder names.
    """
    if isinstance(func, (staticmethod, classmethod, property)) or not inspect.isfunction(func):
        raise TypeError(
            f"@expose needs a plain method defined with 'def', got {type(func).__name__}"
        )
    if func.__name__.startswith("_"):
        raise ValueError(f"{func.__name__!r} is private and can never be exposed")
    setattr(func, _MARK, True)
    return func


def is_exposed(func: Any) -> bool:
    """Whether ``func`` was marked with :func:`expose`."""
    return getattr(func, _MARK, False) is True


def exposed_names(cls: type) -> frozenset[str]:
    """The names of ``cls``'s exposed methods (cached per class).

    A name is exposed when any class in the MRO defines it with ``@expose``;
    overriding an exposed method keeps it exposed, as in Athena.
    """
    table = _tables.get(cls)
    if table is None:
        names = set()
        for klass in cls.__mro__:
            for name, attr in vars(klass).items():
                if is_exposed(attr) and not name.startswith("_"):
                    names.add(name)
        table = _tables[cls] = frozenset(names)
    return table


def resolve(obj: Any, name: str, reserved: frozenset[str] = frozenset()) -> Callable[..., Any]:
    """The bound exposed method ``name`` of ``obj``, or :class:`MethodNotFound`."""
    cls = type(obj)
    if name in reserved or name not in exposed_names(cls):
        raise MethodNotFound()
    attr = _resolved.get((cls, name))
    if attr is None:
        # Look the attribute up on the class so a same-named instance
        # attribute (data the app stored) cannot stand in for the method.
        attr = inspect.getattr_static(cls, name, None)
        if not inspect.isfunction(attr):
            raise MethodNotFound()
        _resolved[(cls, name)] = attr
    method: Callable[..., Any] = attr.__get__(obj, cls)
    return method


def bind(method: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> None:
    """Check that ``args`` / ``kwargs`` fit ``method``'s signature and type hints.

    Raises :class:`BadArguments` (a 400, never a 500) when they do not bind,
    or when a value does not match a JSON-expressible annotation (``int``,
    ``float``, ``str``, ``bool``, ``None``, ``list[...]``, ``dict[str, ...]``,
    ``Optional``/unions, ``Any``). Other annotations are not checked. So a
    wrong call is refused before any user code runs.
    """
    func = getattr(method, "__func__", method)
    cached = _signatures.get(func)
    if cached is None:
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # unresolvable forward references: skip checking
            hints = {}
        hints.pop("return", None)
        sig = inspect.signature(method)
        params = sig.parameters.values()
        fast = None
        if all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params):
            fast = _Positional(
                tuple((p.name, hints.get(p.name)) for p in params),
                sum(1 for p in params if p.default is inspect.Parameter.empty),
            )
        cached = _signatures[func] = (sig, hints, fast)
    sig, hints, fast = cached
    if fast is not None and not kwargs and fast.required <= len(args) <= len(fast.params):
        # What sig.bind and the loop below do, for the common call shape.
        for (name, hint), value in zip(fast.params, args):
            if hint is not None and not _matches(value, hint):
                raise BadArguments(f"argument {name!r} must be {_describe(hint)}")
        return
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise BadArguments(str(exc)) from None
    if not hints:
        return
    for name, value in bound.arguments.items():
        hint = hints.get(name)
        if hint is None:
            continue
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            ok = all(_matches(item, hint) for item in value)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            ok = all(_matches(item, hint) for item in value.values())
        else:
            ok = _matches(value, hint)
        if not ok:
            raise BadArguments(f"argument {name!r} must be {_describe(hint)}")


_UNION_TYPES: tuple[Any, ...] = (Union, getattr(types, "UnionType", Union))


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits ``hint``; unknown annotations always fit."""
    if hint is Any or hint is object:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin in _UNION_TYPES:
        return any(_matches(value, option) for option in typing.get_args(hint))
    if hint is bool:
        return type(value) is bool
    if hint is int:
        return type(value) is int
    if hint is float:
        return type(value) in (int, float)
    if hint is str:
        return isinstance(value, str)
    if hint is list or origin is list:
        if not isinstance(value, list):
            return False
        (item,) = typing.get_args(hint) or (Any,)
        return all(_matches(v, item) for v in value)
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            return False
        _, item = typing.get_args(hint) or (str, Any)
        return all(_matches(v, item) for v in value.values())
    return True


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is None and hasattr(hint, "__name__"):
        return str(hint.__name__)
    return str(hint).replace("typing.", "")
