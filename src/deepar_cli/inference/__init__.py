"""Inference: SageMaker DeepAR's request/response protocol (configurations, output types,
JSON Lines and endpoint requests), batch transform over files and folders, and its
engines (this process, or Ray). `predict` and `serve` answer through it, so the same
request gives the same bytes. May import the foundation, config, data, backends (the
interface) and model.
"""
