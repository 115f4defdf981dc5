"""MXNet's operator functions, generated on first call instead of at import.

`import mxnet` writes, compiles and docstrings a Python function for each of its ~2,000
operators, four times over (ndarray, symbol and their numpy namespaces): 0.7 of the 1.2 s
the import takes, for the few dozen operators a forecast calls. `install()` hooks the import
of `mxnet.base` so that each of those functions is a small stub that generates MXNet's own
function on its first call and then forwards to it. Every operator keeps its name and its
module; what is lost is the generated docstring and signature of an operator not yet called.
The generated code embeds per-process operator handles, so it cannot be cached on disk.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any, Callable, Optional, Sequence

_REGISTRARS = ("_init_op_module", "_init_np_op_module")  # mxnet.base's, in MXNet 1.9.1


def _lazy(make_op_func: Callable[..., Any]) -> Callable[..., Any]:
    """`make_op_func` (handle, op name, function name) -> function, deferred to first call."""

    def make(handle: Any, name: str, func_name: str) -> Callable[..., Any]:
        generated: Optional[Callable[..., Any]] = None

        def operator(*args: Any, **kwargs: Any) -> Any:
            nonlocal generated
            if generated is None:
                generated = make_op_func(handle, name, func_name)
            return generated(*args, **kwargs)

        operator.__name__ = operator.__qualname__ = func_name
        operator.__doc__ = ""  # the numpy registrar edits it as a string
        return operator

    return make


def _defer_registrars(base: ModuleType) -> None:
    for attr in _REGISTRARS:
        register = getattr(base, attr, None)
        if register is None:
            continue

        def deferred(*args: Any, _register: Callable[..., Any] = register,
                     **kwargs: Any) -> Any:
            if "make_op_func" in kwargs:
                kwargs["make_op_func"] = _lazy(kwargs["make_op_func"])
            else:
                args = (*args[:-1], _lazy(args[-1]))
            return _register(*args, **kwargs)

        setattr(base, attr, deferred)


class _BaseFinder(importlib.abc.MetaPathFinder):
    """Finds `mxnet.base` as Python would, and defers its registrars once it has run."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]],
                  target: Optional[ModuleType] = None) -> Any:
        if fullname != "mxnet.base":
            return None
        _uninstall()
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_defer(module: ModuleType) -> None:
            exec_module(module)
            _defer_registrars(module)

        spec.loader.exec_module = exec_and_defer  # type: ignore[method-assign]
        return spec


_finder = _BaseFinder()


def install() -> None:
    """Defer MXNet's operator functions, if MXNet is not imported yet (else: nothing)."""
    if "mxnet" not in sys.modules and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def _uninstall() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
