"""The backends: the deep-learning frameworks deepar-cli trains and forecasts with.

Owns the backend interface (`base`: the `Backend` and `Network` protocols, the per-series
noise seed) and the registry below; each backend is a subpackage (`mxnet/`, SageMaker's own
framework) that implements the interface and is the only code that imports its framework.
Adding a backend is adding its subpackage and its line in BACKENDS. May import the
foundation (errors, atomic, jsontext, interrupts, threads, version), config and data;
nothing outside a backend's subpackage imports it: the rest reaches it through
`get_backend`.
"""

from __future__ import annotations

import importlib
from typing import Dict

from deepar_cli.backends.base import Backend
from deepar_cli.errors import UsageError

# Every backend, by the name model.json gives it: the module whose BACKEND implements it.
BACKENDS: Dict[str, str] = {"mxnet": "deepar_cli.backends.mxnet.backend"}
DEFAULT_BACKEND = "mxnet"


class UnknownBackend(UsageError):
    """A backend name that is not in BACKENDS."""

    def __init__(self, name: str) -> None:
        super().__init__(f'unknown backend "{name}"; valid: {", ".join(BACKENDS)}')
        self.name = name


def get_backend(name: str) -> Backend:
    """The registered backend `name`, its module imported on first use (which imports
    no framework yet); UnknownBackend for another name."""
    if name not in BACKENDS:
        raise UnknownBackend(name)
    backend: Backend = importlib.import_module(BACKENDS[name]).BACKEND
    return backend
