"""The data layer: SageMaker DeepAR records and their validation, channels (files and
folders of JSON Lines or Parquet), GluonTS entries and datasets, the dataset summary, the
notebook's synthetic generator, `time_freq`, training windows and the one hold-out slicer
(`holdout.drop_last`). It sits at the bottom. May import the top-level helpers
(`errors`, `jsontext`, `atomic`), numpy, pandas and GluonTS's framework-free parts, and
takes `config.hyperparameters.Hyperparameters` only as values passed in; never `model`,
`backends`, `evaluation`, `inference`, `serve`, `tune` or `cli`.
"""
