"""Seeding the generators that training draws from (forecasts seed per series instead:
see deepar_cli.backends.base.series_seed)."""

from __future__ import annotations

import random

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and MXNet's global generators (GluonTS's data loaders and
    MXNet's initializers and dropout draw from them)."""
    import mxnet as mx

    random.seed(seed)
    np.random.seed(seed % 2**32)
    mx.random.seed(seed % 2**32)
