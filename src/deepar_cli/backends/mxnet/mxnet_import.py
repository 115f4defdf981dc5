"""`import mxnet` without the work a forecast never uses: 1.2 s down to 0.3 s.

Profiled with `python -X importtime` (MXNet 1.9.1, Python 3.11), the import spent:

* 0.7 s writing, compiling and documenting a Python function for each of its ~2,000
  operators, in four namespaces (ndarray, symbol and their numpy ones), for the few dozen a
  forecast calls. Each is now a small stub that generates MXNet's own function on its first
  call and forwards to it: same names, modules and results; what is lost is the generated
  docstring and signature of an operator not yet called. (The generated code embeds
  per-process operator handles, so it cannot be cached on disk.)
* 0.15 s importing setuptools, through its distutils shim, for `distutils.version`: MXNet's
  import gets the standard library's distutils instead (present up to Python 3.11).
* 0.14 s executing `mxnet.test_utils`, `mxnet.contrib.onnx` and `requests` (for
  downloads), which a forecast never uses: they execute on first attribute access instead.

`install()` puts a finder first on `sys.meta_path` that acts only while MXNet is being
imported, and leaves once it is; it does nothing if MXNet is already imported.
"""

from __future__ import annotations

import importlib.machinery
import sys
from types import ModuleType
from typing import Any, Callable, Optional, Sequence

_REGISTRARS = ("_init_op_module", "_init_np_op_module")  # mxnet.base's, in MXNet 1.9.1
_UNUSED = ("mxnet.test_utils", "mxnet.contrib.onnx", "requests")


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


def _then(spec: Any, after: Callable[[ModuleType], None]) -> Any:
    """`spec` whose module runs `after(module)` once it has executed (even if it failed)."""
    exec_module = spec.loader.exec_module

    def exec_then(module: ModuleType) -> None:
        try:
            exec_module(module)
        finally:
            after(module)

    spec.loader.exec_module = exec_then
    return spec


class _MXNetFinder:
    """A `sys.meta_path` finder: MXNet's modules as Python finds them, changed as the module
    docstring says. It changes nothing before MXNet's import starts."""

    def __init__(self) -> None:
        self.importing_mxnet = False

    def find_spec(self, fullname: str, path: Optional[Sequence[str]],
                  target: Optional[ModuleType] = None) -> Any:
        if not self.importing_mxnet and fullname != "mxnet":
            return None
        if fullname == "distutils":
            return importlib.machinery.PathFinder.find_spec(fullname)  # None from 3.12
        if fullname not in ("mxnet", "mxnet.base", *_UNUSED):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        if fullname == "mxnet":
            self.importing_mxnet = True
            return _then(spec, lambda module: _uninstall())
        if fullname == "mxnet.base":
            return _then(spec, _defer_registrars)
        from importlib.util import LazyLoader

        spec.loader = LazyLoader(spec.loader)
        return spec


_finder = _MXNetFinder()


def install() -> None:
    """Lighten MXNet's import, if MXNet is not imported yet (else: nothing)."""
    if "mxnet" not in sys.modules and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def _uninstall() -> None:
    _finder.importing_mxnet = False
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
