"""Multimodal emotion and sentiment analysis of video: the core library.

The flow, one module per stage:
media -> transcribe -> encoders (text, face, audio, video) -> model -> pipeline.
"""

import os

# OpenMP threads that spin while waiting for each other waste their time slices as soon as anything
# else uses the CPU: on 2 busy cores the 61-s benchmark video took 8.9-9.8 s with passive waiting
# against 11.1-12.0 s spinning (the encoder's CPU time 3.4 s against 4.2 s). Set before torch is
# imported; a value in the environment wins (as in train/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
