"""Training and evaluation on MELD-format CSVs: data (text examples with dialogue context),
train (the training loop), evaluate (the evaluation contract), metrics (pure functions)."""
