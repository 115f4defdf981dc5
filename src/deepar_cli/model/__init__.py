"""The model: the model folder (data, never code: JSON and a backend's weights), the one
forecast path (`forecasting.sample_paths`, through a backend's network or an ensemble of
them), means, quantiles and ensembles. Reaches a framework only through the backend
interface. May import the foundation, config, data and deepar_cli.backends (its registry
and interface, never a backend's subpackage).
"""
