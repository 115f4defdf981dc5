"""`deepar-cli tune`, SageMaker's automatic model tuning on Optuna: the study and its
workers (`study`), one trial (`trials`), the held-out data (`channels`), the trials table
and plots (`outputs`), the final model (`final_model`, with Caruana's ensemble selection in
`selection`) and the events it logs (`events`, printed by `reporting`, which `train` uses
too). May import the layers below it (config, data, model, evaluation and
training), never the CLI; `events` imports nothing of tune's.
"""
