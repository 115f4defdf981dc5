"""The endpoint, `deepar-cli serve`: SageMaker's routes and refusals, content negotiation,
the asyncio HTTP front and the pool of forecasting worker processes. Answers through
deepar_cli.inference. May import the foundation, config, data, backends (the interface),
model and inference.
"""
