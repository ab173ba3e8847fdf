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
from typing import Any, Callable, TypeVar

from .errors import BadArguments, MethodNotFound

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__athena_exposed__"
_tables: dict[type, frozenset[str]] = {}
_signatures: dict[Any, inspect.Signature] = {}


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
    if name in reserved or name not in exposed_names(type(obj)):
        raise MethodNotFound()
    # Look the attribute up on the class so a same-named instance attribute
    # (data the app stored) cannot stand in for the method.
    attr = inspect.getattr_static(type(obj), name, None)
    if not inspect.isfunction(attr):
        raise MethodNotFound()
    method: Callable[..., Any] = attr.__get__(obj, type(obj))
    return method


def bind(method: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> None:
    """Check that ``args`` / ``kwargs`` bind to ``method``'s signature.

    Raises :class:`BadArguments` (a 400, never a 500) when they do not, so
    that a wrong call is reported before any user code runs.
    """
    func = getattr(method, "__func__", method)
    sig = _signatures.get(func)
    if sig is None:
        sig = _signatures[func] = inspect.signature(method)
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise BadArguments(str(exc)) from None
