"""Fingerprints for ``checkpoint=``: of a function (its code and what it closes over) and of an
item, stable across runs and interpreters, so that a stored result is answered only to the same
call (see ``_checkpoint`` for the store, ``_resume`` for the map's side).
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import types

import cloudpickle

from ._serialize import describe

__all__ = ["function_fingerprint", "item_fingerprint"]

#: The pickle protocol of item fingerprints: fixed, so that a newer Python (whose highest
#: protocol may differ) computes the same fingerprints.
_ITEM_PROTOCOL = 5


def item_fingerprint(item: object) -> bytes:
    """16 bytes that identify ``item``: a SHA-256 of its pickle (protocol 5; cloudpickle where the
    standard pickler refuses it).

    Equal items usually have equal pickles; where they do not (a set of strings, whose order
    changes with the interpreter's hash seed), the item is computed again, which is safe. An item
    that cannot be pickled at all has no fingerprint: ``b""``, which ``Checkpoint.stored`` never
    answers and ``Checkpoint.add`` does not store, so it is computed on every run.
    """
    try:
        data = pickle.dumps(item, _ITEM_PROTOCOL)
    except Exception:
        try:
            data = cloudpickle.dumps(item, _ITEM_PROTOCOL)
        except Exception:
            return b""
    return hashlib.sha256(data).digest()[:16]


def function_fingerprint(fn: object) -> str:
    """A hex string that identifies what ``fn`` computes, equal across runs and interpreters (of
    one Python version) for the same source, and different when any of these changes:

    - a Python function's code: its bytecode, constants (nested functions' code included),
      names, argument layout and exception table, and its module and qualified name;
    - its defaults and keyword-only defaults, and the values in its closure (a decorator's
      wrapped function is followed into, as is any function found there);
    - the module-level functions of its own module that it names (followed in turn), and the
      module-level constants it names (``None``, numbers, strings, bytes, tuples and frozensets
      of those);
    - a ``functools.partial``'s function, arguments and keywords; a bound method's function and
      its object; a callable object's class (its ``__call__``) and its pickled state; a class's
      ``__new__``, ``__init__``, ``__post_init__`` and ``__call__`` where it defines them.

    Not part of it: the line numbers and the file name in the code, so moving a function within
    its file (or editing the lines above it) keeps its stored results; anything it reaches only
    through another module (an imported library, a mutable global such as a dict, a class's
    other methods); builtins and C functions, which count by name. Change one of those and pass
    another ``checkpoint`` path, or delete the file.

    Other values (defaults, closure contents, partial arguments, bound objects) count by their
    pickle. One whose pickle differs from run to run (a set of strings, a class cloudpickle ships
    by value) makes the fingerprint differ too: nothing is answered from the store, which is
    safe. One that cannot be pickled raises ``TypeError``.
    """
    hasher = _Fingerprinter()
    hasher.callable(fn)
    return hasher.hexdigest()


_SCALARS = (type(None), bool, int, float, complex, str, bytes, type(Ellipsis))


def _is_constant(value: object) -> bool:
    if type(value) in _SCALARS:
        return True
    if isinstance(value, (tuple, frozenset)) and type(value) in (tuple, frozenset):
        return all(_is_constant(v) for v in value)
    return False


def _names(code: types.CodeType) -> set[str]:
    """The global (and attribute) names ``code`` and the code nested in it use."""
    found = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= _names(const)
    return found


class _Fingerprinter:
    """Feeds a canonical, length-prefixed encoding of a callable into SHA-256."""

    def __init__(self, module: str | None = None) -> None:
        self._hash = hashlib.sha256()
        #: Whose module-level functions are followed through globals: the first function's.
        self._module = module
        #: id -> order of first visit, for cycles (a recursive function, a self-referencing
        #: closure); ``_keep`` keeps the objects alive so that no id is reused meanwhile.
        self._seen: dict[int, int] = {}
        self._keep: list[object] = []

    def hexdigest(self) -> str:
        return self._hash.hexdigest()[:32]

    def _write(self, tag: str, data: bytes | str = b"") -> None:
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        self._hash.update(f"{tag}:{len(raw)}:".encode())
        self._hash.update(raw)

    def _visited(self, obj: object) -> bool:
        """True (and a back-reference written) if ``obj`` was encoded already."""
        order = self._seen.get(id(obj))
        if order is not None:
            self._write("ref", str(order))
            return True
        self._seen[id(obj)] = len(self._seen)
        self._keep.append(obj)
        return False

    def callable(self, fn: object) -> None:
        if self._visited(fn):
            return
        if isinstance(fn, functools.partial):
            self._write("partial")
            self.callable(fn.func)
            self.value(fn.args)
            self.value(dict(sorted(fn.keywords.items())))
        elif isinstance(fn, types.FunctionType):
            self._function(fn)
        elif isinstance(fn, types.MethodType):
            self._write("method")
            self.callable(fn.__func__)
            self.value(fn.__self__)
        elif isinstance(fn, type):
            self._class(fn)
        elif isinstance(type(fn).__call__, types.FunctionType):  # an instance of a class of yours
            self._write("instance")
            self._class(type(fn))
            self._pickle(fn)
        else:  # a builtin, a C extension's callable: by its pickle, a reference by name
            self._write("other")
            self._pickle(fn)
            wrapped = getattr(fn, "__wrapped__", None)  # functools.lru_cache and the like
            if wrapped is not None:
                self.callable(wrapped)

    def _function(self, fn: types.FunctionType) -> None:
        if self._module is None:
            self._module = fn.__module__
        self._write("function", f"{fn.__module__}:{fn.__qualname__}")
        self._code(fn.__code__)
        self.value(fn.__defaults__)
        self.value(dict(sorted((fn.__kwdefaults__ or {}).items())))
        for cell in fn.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # a cell not filled yet
                self._write("empty-cell")
            else:
                self.value(contents)
        namespace = fn.__globals__
        for name in sorted(_names(fn.__code__)):
            if name not in namespace:
                continue
            found = namespace[name]
            if isinstance(found, types.FunctionType) and found.__module__ == self._module:
                self._write("global", name)
                self.callable(found)
            elif _is_constant(found):
                self._write("global", name)
                self.value(found)

    def _code(self, code: types.CodeType) -> None:
        self._write("code", code.co_name)
        self._write(
            "layout",
            f"{code.co_argcount},{code.co_posonlyargcount},{code.co_kwonlyargcount},"
            f"{code.co_flags}",
        )
        self._write("bytecode", code.co_code)
        self._write("exceptions", getattr(code, "co_exceptiontable", b""))
        for field in (code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars):
            self._write("names", "\x00".join(field))
        self._write("consts", str(len(code.co_consts)))
        for const in code.co_consts:
            self.value(const)

    def _class(self, cls: type) -> None:
        self._write("class", f"{cls.__module__}:{cls.__qualname__}")
        for name in ("__new__", "__init__", "__post_init__", "__call__"):
            method = cls.__dict__.get(name)
            if isinstance(method, (staticmethod, classmethod)):
                method = method.__func__
            if isinstance(method, types.FunctionType):
                self._write("method", name)
                self.callable(method)

    def value(self, value: object) -> None:
        kind = type(value)
        if kind in _SCALARS:
            raw = value if isinstance(value, bytes) else repr(value)
            self._write(kind.__name__, raw)
        elif isinstance(value, (tuple, list)) and kind in (tuple, list):
            self._write(kind.__name__, str(len(value)))
            for item in value:
                self.value(item)
        elif isinstance(value, (set, frozenset)) and kind in (set, frozenset):
            # In the order of the elements' own fingerprints, not the (hash-seeded) set order.
            parts = []
            for item in value:
                sub = _Fingerprinter(self._module)
                sub.value(item)
                parts.append(sub.hexdigest())
            self._write(kind.__name__, ",".join(sorted(parts)))
        elif isinstance(value, dict) and kind is dict:
            self._write("dict", str(len(value)))
            for key, item in value.items():
                self.value(key)
                self.value(item)
        elif isinstance(value, types.CodeType):
            self._code(value)
        elif isinstance(value, (types.FunctionType, types.MethodType, functools.partial)):
            self.callable(value)
        else:
            self._opaque(value)

    def _opaque(self, value: object) -> None:
        if self._visited(value):
            return
        self._pickle(value)

    def _pickle(self, value: object) -> None:
        try:
            data = pickle.dumps(value, _ITEM_PROTOCOL)
        except Exception:
            try:
                data = cloudpickle.dumps(value, _ITEM_PROTOCOL)
            except Exception as exc:
                raise TypeError(
                    f"cannot fingerprint the function for checkpoint=: {type(value).__name__} "
                    f"{value!r:.80} cannot be pickled ({describe(exc)})"
                ) from exc
        self._write("pickle", data)
