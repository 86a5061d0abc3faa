"""Training and evaluation on MELD-format CSVs: train (the command line, top to bottom), loop
(the one training loop), card (the one card builder), evaluate (the evaluation contract, text or
clips), data (text examples with dialogue context), text_layers (frozen bottom, tuned top),
metrics (pure functions); clips, features, video_features and retrain for training on clips;
ravdess and voice for the shipped voice model (RAVDESS, CC BY-NC-SA 4.0)."""

import os

# OpenMP threads that spin while waiting for each other multiply training time several-fold as
# soon as anything else uses the CPU (measured: 206 s vs 32 s for one 10,000-row epoch on 2 busy
# cores). Passive waiting costs little on an idle machine. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
