"""Inference: SageMaker's request/response protocol (`protocol`: configurations, requests
and JSON Lines in, prediction objects out, the same bytes for `predict` and `serve`), and
batch transform (`jobs`: file jobs and shards; `batch`: the `Engine` seam, the local engine
and `make_engine`; `ray_engine`: the Ray engine). May import `data`, `config`, `model`
and the top-level helpers; never `serve`, `tune`, `cli` or a framework (forecasts come
through `model.forecasting`).
"""
