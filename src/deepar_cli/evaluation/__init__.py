"""Evaluation: backtests scored with the GluonTS Evaluator (SageMaker's test figures,
rolling windows, a seasonal-naive baseline beside) and the notebook's plots, all drawn
through the one forecast path. May import the foundation, config, data, backends (the
interface) and model.
"""
