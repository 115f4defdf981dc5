"""Data: SageMaker's records and channels (JSON Lines, Parquet, gzip), GluonTS entries
and datasets, dataset statistics, the training windows of an epoch and the notebook's
synthetic generator. Knows the formats, not the model. May import the foundation and
config.
"""
