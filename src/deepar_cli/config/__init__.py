"""Configuration: SageMaker DeepAR's hyperparameters (names, defaults, ranges, the list of
likelihoods), SageMaker's time frequencies, the tuning job's configuration and the memory
estimates that refuse a job before it starts. Values are parsed and checked here, before
any data is read. May import the foundation only (errors, atomic, jsontext, interrupts,
threads, version).
"""
