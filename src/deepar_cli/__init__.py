"""deepar-cli: Amazon SageMaker's DeepAR workflow, done locally on GluonTS."""

__version__ = "0.1.0"
