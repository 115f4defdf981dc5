"""The MXNet backend: GluonTS's MXNet DeepAR (SageMaker's own framework) behind the
interface of deepar_cli.backends.base.

Owns everything that imports MXNet or `gluonts.mx`: training the estimator (`training`),
the likelihood table (`likelihoods`), seeded sampling (`sampling`), the faster kernels
(`acceleration`), seeding and the lighter `import mxnet` (`mxnet_import`, installed here,
before any module of this package imports MXNet). May import the foundation, config, data
and deepar_cli.backends.base; only deepar_cli.backends' registry names it.
"""

from deepar_cli.backends.mxnet import mxnet_import

mxnet_import.install()
