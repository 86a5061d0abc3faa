"""Multimodal emotion and sentiment analysis of video: the core library.

The flow, one module per stage:
media -> transcribe -> encoders (text, face, audio, video) -> model -> pipeline.
"""

__version__ = "0.1.0"
