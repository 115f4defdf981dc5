"""SageMaker's likelihoods in GluonTS's MXNet DeepAR: one row each, the only place that
maps them (adding a likelihood adds its row here, and in every other backend's table)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import numpy as np

from deepar_cli.errors import HyperparameterError


@dataclass(frozen=True)
class Likelihood:
    """How the MXNet backend trains and samples one SageMaker likelihood.

    `output` is the GluonTS distribution output (gluonts.mx.distribution); `parameters`
    are its distribution's, as the draw takes them. A location-scale family names the
    numpy `standard` noise, which the samples scale and shift in MXNet; another family
    draws one series' samples in numpy, step by step, with `draw(generator, *params)`.
    Each draw matches the distribution GluonTS samples.
    """

    output: str
    parameters: Tuple[str, ...]
    standard: Optional[str] = None
    draw: Optional[Callable[..., np.ndarray]] = None
    # Mean scaling of the targets; the beta likelihood lives on (0, 1), which scaling
    # would leave.
    scaling: bool = True

    def distribution_output(self) -> Any:
        import gluonts.mx.distribution

        return getattr(gluonts.mx.distribution, self.output)()


LIKELIHOODS = {
    "student-T": Likelihood("StudentTOutput", ("mu", "sigma", "nu"),
                            draw=lambda g, mu, sigma, nu: mu + sigma * g.standard_t(nu)),
    "gaussian": Likelihood("GaussianOutput", ("mu", "sigma"), standard="standard_normal"),
    "beta": Likelihood("BetaOutput", ("alpha", "beta"), draw=lambda g, a, b: g.beta(a, b),
                       scaling=False),
    "negative-binomial": Likelihood(
        "NegativeBinomialOutput", ("mu", "alpha"),
        draw=lambda g, mu, alpha: g.poisson(g.gamma(1.0 / alpha, alpha * mu))),
    # A Laplace likelihood with a fixed, tiny scale: its negative log-likelihood is the L1
    # loss, and its samples collapse onto the point forecast.
    "deterministic-L1": Likelihood("LaplaceFixedVarianceOutput", ("mu", "b"),
                                   standard="laplace"),
}


def likelihood(name: str) -> Likelihood:
    """The row of SageMaker's likelihood `name`; HyperparameterError if it has none."""
    if name not in LIKELIHOODS:
        raise HyperparameterError(f'hyperparameter "likelihood" is "{name}", which the mxnet '
                                  f'backend does not implement; it implements '
                                  f'{", ".join(LIKELIHOODS)}')
    return LIKELIHOODS[name]
