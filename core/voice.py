"""The voice: Whisper's encoder states over an utterance, pooled over time.

Whisper's encoder turns 16-kHz audio into one state every 20 ms (50 a second, 512-d for base). An
utterance's voice feature is the mean and the standard deviation of the states that cover its
span, taken after block LAYER of the encoder's 6: 2 x 512 = 1,024 numbers. Held-out RAVDESS
actors by block 0..5 and after the final norm (28-s windows, calm folded into neutral): logistic
regression 69.1, 71.6, 73.1, 74.2, 74.9, 70.0, 71.0 %; a ridge classifier, the shipped head's
kind, 66.9, 70.2, 72.3, 75.4, 73.2, 70.5, 70.2 %, and with calm left out of training 77.9 % for
block 3 against 75.3 % for block 4. The middle of the encoder hears prosody best, its end is tuned
to words. Those states were trained to carry the words, but they carry the speaker's prosody
too: a linear classifier on them tells acted anger from sadness in voices it
has never heard (README, "The shipped voice model").

The states always come from a 30-s encoder context, as transcription computes them: Whisper's
encoder never saw a shorter input, and states computed with a context cut to the utterance's own
length are worth much less (measured on RAVDESS, held-out actors, logistic regression: 61 %
against 72 % with the 30-s context; and a head trained on one kind scores 35 % on the other).

- In the app (core.pipeline): the states transcription already computed for each window
  (core.whisper_batch.capture_states -> WindowStates); `from_windows(start, end)` cuts an
  utterance out of the window that holds it. No second encoder pass.
- In training (train.features) and as the app's fallback: `encode_window(model, audio, start,
  end)` encodes the utterance the way transcription would if it were the whole file: a window
  from CLIP_PAD s before its speech to CLIP_PAD s after, padded to 30 s.
- In training, a clip among the other clips of its dialogue (train.features, train.ravdess):
  `heard_together` lays their speech in order into shared windows, as the app hears the
  utterances of one video. The two contexts give different states (a head trained on one alone
  does poorly on the other), so the voice is trained on both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SAMPLE_RATE = 16000
STATES_PER_SECOND = 50          # Whisper's encoder: one state per 20 ms (two 10-ms mel frames)
MIN_SECONDS = 0.1               # shorter audio holds no voice worth pooling
MAX_SECONDS = 30.0              # the encoder's longest context
LAYER = 3                       # states after this encoder block (0-based) are pooled
TOGETHER_SECONDS = 28.0         # heard_together: windows of utterances up to this long ...
TOGETHER_GAP = 0.6              # ... with this much silence between them (core.packing keeps 0.6 s of a pause)
FEATURE = f"whisper-block{LAYER}-mean-std"
LEGACY_FEATURE = "whisper-block4-mean-std"   # what a card that names no voice feature learned on


def feature_of(card_data: dict) -> str:
    """The voice feature a checkpoint's audio branch learned on, from its card's data: the
    `audio_feature` train.train writes, else the shipped voice head's `voice.feature`, else the
    one release that wrote neither (LEGACY_FEATURE)."""
    named = card_data.get("audio_feature")
    voice = card_data.get("voice")
    if not named and isinstance(voice, dict):
        named = str(voice.get("feature") or "").split(":")[0].strip()
    return str(named or LEGACY_FEATURE)


def encoder_digest(model) -> str:
    """A short digest of the Whisper encoder's weights: a voice feature means nothing under other
    weights, so caches and checkpoints are keyed by it."""
    import hashlib
    h = hashlib.sha256()
    for name, t in sorted(model.encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes()[:4096])
    return h.hexdigest()[:12]


def voice_dim(model) -> int:
    """Length of a pooled voice feature for this Whisper (2 x its state width)."""
    return 2 * int(model.dims.n_audio_state)


def pool(states: torch.Tensor) -> np.ndarray:
    """Mean and standard deviation over time of states [T, d] -> [2d] float32."""
    states = states.float()
    if states.shape[0] < 2:
        states = torch.cat([states, states]) if states.shape[0] else torch.zeros(2, states.shape[-1])
    return torch.cat([states.mean(0), states.std(0)]).cpu().numpy().astype(np.float32)


def run_encoder(encoder, x: torch.Tensor, final: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
    """openai-whisper's AudioEncoder.forward on mels x [B, n_mels, 3000], also returning the states
    after block LAYER: (final states [B, 1500, d], voice states [B, 1500, d]). `final=False` stops
    after block LAYER (the voice alone: the blocks above it are not run) and returns (None, voice)."""
    x = torch.nn.functional.gelu(encoder.conv1(x))
    x = torch.nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
    x = (x + encoder.positional_embedding).to(x.dtype)
    kept = x
    for i, block in enumerate(encoder.blocks):
        x = block(x)
        if i == LAYER:
            kept = x
            if not final:
                return None, kept
    return encoder.ln_post(x), kept


@torch.no_grad()
def encode_window(model, audio: np.ndarray, start: float, end: float) -> "WindowStates":
    """The encoder states of a window around [start, end] of `audio`, as transcription computes
    them (core.whisper_batch.transcribe_windows): Whisper's log-mel over the audio, the window cut
    from CLIP_PAD s before `start` to CLIP_PAD s after `end` (at most 30 s), padded to 30 s."""
    from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim

    from .transcribe import CLIP_PAD
    audio = np.nan_to_num(np.asarray(audio, dtype=np.float32).reshape(-1))
    duration = len(audio) / SAMPLE_RATE
    w0 = max(0.0, start - CLIP_PAD)
    w1 = min(duration, end + CLIP_PAD, w0 + MAX_SECONDS)
    piece = audio[int(round(w0 * SAMPLE_RATE)):int(round(w1 * SAMPLE_RATE))]
    weight = model.encoder.conv1.weight
    mel = log_mel_spectrogram(torch.from_numpy(piece), model.dims.n_mels, padding=N_SAMPLES)
    x = pad_or_trim(mel, N_FRAMES).unsqueeze(0).to(weight.device, weight.dtype)
    return WindowStates(w0, len(piece) / SAMPLE_RATE, run_encoder(model.encoder, x, final=False)[1][0].float().cpu())


def voice_feature(model, audio: np.ndarray, start: float, end: float) -> np.ndarray:
    """The pooled voice feature of [start, end] of `audio`, heard in its own 30-s window."""
    return pool(encode_window(model, audio, start, end).span(start, end))


@dataclass
class WindowStates:
    """The encoder states of one transcription window: states[i] covers start + i / 50 seconds."""

    start: float                  # seconds from the start of the audio
    seconds: float                # how much real audio the window holds (the rest is padding)
    states: torch.Tensor          # [1500, d] on the CPU

    @property
    def end(self) -> float:
        return self.start + self.seconds

    def overlap(self, start: float, end: float) -> float:
        return max(0.0, min(end, self.end) - max(start, self.start))

    def span(self, start: float, end: float) -> torch.Tensor:
        """The states that cover [start, end] (clamped to the window's audio)."""
        a = int(np.floor((max(start, self.start) - self.start) * STATES_PER_SECOND))
        b = int(np.ceil((min(end, self.end) - self.start) * STATES_PER_SECOND))
        a = min(max(a, 0), self.states.shape[0] - 1)
        return self.states[a:max(b, a + 1)]


def from_windows(windows: list[WindowStates], start: float, end: float) -> torch.Tensor | None:
    """The states of [start, end] from the window that holds most of it (None: no window does)."""
    best = max(windows, key=lambda w: w.overlap(start, end), default=None)
    if best is None or best.overlap(start, end) <= 0.0:
        return None
    return best.span(start, end)


def heard_together(model, pieces: list[np.ndarray], seconds: float = TOGETHER_SECONDS,
                   gap: float = TOGETHER_GAP) -> list[torch.Tensor]:
    """The states [T, d] of each piece of audio (one utterance's speech each) heard the way the app
    hears the utterances of one video: the pieces laid in order, `gap` s of silence before each
    and after the last, into windows of up to `seconds` s (a new window where the next piece would
    not fit), each window encoded once with the 30-s context (run_encoder) and each piece's states
    cut out of it. The gap is what core.packing leaves of a long pause (0.6 s)."""
    from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim

    windows: list[list[int]] = []
    length = 0.0
    for i, piece in enumerate(pieces):
        took = gap + len(piece) / SAMPLE_RATE
        if not windows or (windows[-1] and length + took > seconds):
            windows.append([])
            length = 0.0
        windows[-1].append(i)
        length += took
    silence = np.zeros(int(gap * SAMPLE_RATE), np.float32)
    weight = model.encoder.conv1.weight
    out: list[torch.Tensor | None] = [None] * len(pieces)
    for window in windows:
        parts, spans, t = [], [], 0.0
        for i in window:
            piece = np.asarray(pieces[i], np.float32)
            parts += [silence, piece]
            t += gap
            spans.append((i, t, t + len(piece) / SAMPLE_RATE))
            t += len(piece) / SAMPLE_RATE
        audio = np.concatenate(parts + [silence])
        mel = log_mel_spectrogram(torch.from_numpy(audio), model.dims.n_mels, padding=N_SAMPLES)
        with torch.no_grad():
            x = pad_or_trim(mel, N_FRAMES).unsqueeze(0).to(weight.device, weight.dtype)
            states = run_encoder(model.encoder, x, final=False)[1][0].float().cpu()
        heard = WindowStates(0.0, len(audio) / SAMPLE_RATE, states)
        for i, a, b in spans:
            out[i] = heard.span(a, b)
    return out


def speech_span(audio: np.ndarray) -> tuple[float, float]:
    """(start, end) seconds of the speech in a clip, padded as the app pads an utterance's bounds
    (core.transcribe: voice-activity regions, PAD seconds each side); the whole clip when no
    speech is found. A clip's voice feature pools this span, as the app pools an utterance."""
    from .transcribe import PAD, speech_regions

    duration = len(audio) / SAMPLE_RATE
    regions = speech_regions(np.asarray(audio, dtype=np.float32))
    if not regions:
        return 0.0, duration
    return max(0.0, regions[0][0] - PAD), min(duration, regions[-1][1] + PAD)


def voiced_span(audio: np.ndarray, start: float, end: float) -> tuple[float, float]:
    """The stretch of an utterance [start, end] (seconds in `audio`) whose states its voice pools:
    the speech_span of its audio, exactly as of the clip an export cuts there (train.features), so
    the app and training pool the same frames. Whisper may stretch a first word back over the
    silence before it (a RAVDESS clip's 0.85 s of quiet read "Kids" from 0.03 s); its bounds keep
    the words, the voice only what is spoken."""
    lo = max(0, int(start * SAMPLE_RATE))
    a, b = speech_span(np.asarray(audio[lo: max(lo, int(end * SAMPLE_RATE))], dtype=np.float32))
    return start + a, start + b


def clip_voice_feature(model, audio: np.ndarray) -> np.ndarray:
    """A clip's voice feature: its speech span (speech_span), heard as transcription would hear
    the clip, pooled."""
    start, end = speech_span(audio)
    return voice_feature(model, audio, start, end)
