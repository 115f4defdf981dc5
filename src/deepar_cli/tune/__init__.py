"""Tuning, `deepar-cli tune`: SageMaker's automatic model tuning on Optuna (the study and
its trials, each a `deepar_cli.training.train`), the final model, ensemble selection and
the log lines of training events. May import the foundation, config, data, backends (the
interface), model, evaluation, training and inference.
"""
