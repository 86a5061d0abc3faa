"""Training and evaluation on MELD-format CSVs: data (text examples with dialogue context),
train (the training loop), evaluate (the evaluation contract), metrics (pure functions);
clips, features, fit_clips and retrain for training all three modalities on clips."""

import os

# OpenMP threads that spin while waiting for each other multiply training time several-fold as
# soon as anything else uses the CPU (measured: 206 s vs 32 s for one 10,000-row epoch on 2 busy
# cores). Passive waiting costs little on an idle machine. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
