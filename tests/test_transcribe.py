"""Whisper: conversion of the packaged CTranslate2 weights, transcription, boundaries, guards, WER."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core import recall
from core import transcribe as tr
from core import utterances as cut
from core import whisper_batch as wb
from core import whisper_convert as wc
from core.precision import native_bf16
from core.types import Utterance
from tests import mediagen

SENTENCES = ["Kids are talking by the door.",
             "The weather was lovely this morning.",
             "Please bring me a cup of coffee after lunch."]
BOUNDARY_TOLERANCE = 0.5   # seconds


@pytest.fixture(scope="module")
def variables():
    parts, _ = wc.packaged_base_files()
    return wc.read_ct2_model(parts)


@pytest.fixture(scope="module")
def checkpoint(variables):
    return wc.convert_ct2_to_whisper(variables, [[3, 1], [5, 6]])


@pytest.fixture(scope="module")
def model():
    return tr.load_whisper()


def _decode(video: Path) -> np.ndarray:
    try:
        from core.media import load_audio
    except ImportError:   # the media module is optional for this test
        raw = subprocess.run([mediagen.FFMPEG, "-nostdin", "-i", str(video), "-ac", "1", "-ar", "16000",
                              "-f", "s16le", "-"], capture_output=True, check=True).stdout
        return np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0
    return load_audio(video)


# --------------------------------------------------------------------------- conversion

def test_dims_from_shapes(variables):
    assert wc.model_dims(variables) == {
        "n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 512, "n_audio_head": 8, "n_audio_layer": 6,
        "n_vocab": 51865, "n_text_ctx": 448, "n_text_state": 512, "n_text_head": 8, "n_text_layer": 6}


def test_converted_tensors_equal_ct2(variables, checkpoint):
    sd = checkpoint["model_state_dict"]

    def same(key, array):
        assert tuple(sd[key].shape) == array.shape, key
        assert torch.equal(sd[key].float(), torch.from_numpy(array.astype(np.float32))), key

    same("encoder.conv1.weight", variables["encoder/conv1/weight"])
    same("decoder.token_embedding.weight", variables["decoder/embeddings/weight"])
    same("encoder.positional_embedding", variables["encoder/position_encodings/encodings"])
    qkv_w = variables["encoder/layer_3/self_attention/linear_0/weight"]
    qkv_b = variables["encoder/layer_3/self_attention/linear_0/bias"]
    for i, name in enumerate(("query", "key", "value")):
        same(f"encoder.blocks.3.attn.{name}.weight", qkv_w[i * 512:(i + 1) * 512])
    same("encoder.blocks.3.attn.query.bias", qkv_b[:512])
    same("encoder.blocks.3.attn.value.bias", qkv_b[1024:])
    assert "encoder.blocks.3.attn.key.bias" not in sd and not np.any(qkv_b[512:1024])
    kv = variables["decoder/layer_5/attention/linear_1/weight"]
    same("decoder.blocks.5.cross_attn.key.weight", kv[:512])
    same("decoder.blocks.5.cross_attn.value.weight", kv[512:])
    same("decoder.blocks.5.cross_attn.out.bias", variables["decoder/layer_5/attention/linear_2/bias"])
    same("decoder.ln.weight", variables["decoder/layer_norm/gamma"])
    # every float tensor is used once: only the zero key biases and the tied output projection remain
    total = sum(a.size for k, a in variables.items() if a.ndim and k != "decoder/projection/weight")
    key_biases = 512 * (6 + 6 + 6)   # encoder self, decoder self, decoder cross
    assert sum(t.numel() for t in sd.values()) == total - key_biases


def test_checkpoint_loads_strictly_with_openai_whisper(checkpoint, tmp_path):
    import whisper

    path = wc.save_checkpoint(checkpoint, tmp_path / "base.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["base.pt"]       # no temp file left behind
    model = whisper.load_model(str(path), device="cpu")               # strict load_state_dict
    expected = checkpoint["model_state_dict"]["decoder.blocks.0.cross_attn.query.weight"].float()
    assert torch.equal(model.state_dict()["decoder.blocks.0.cross_attn.query.weight"], expected)


def test_packaged_checkpoint_is_converted_once(tmp_path, monkeypatch):
    monkeypatch.setenv(wc.CACHE_ENV, str(tmp_path))
    t0 = time.perf_counter()
    path = wc.packaged_base_checkpoint()
    first = time.perf_counter() - t0
    assert path == tmp_path / "whisper" / "base.pt" and path.stat().st_size > 100e6
    mtime = path.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert wc.packaged_base_checkpoint() == path
    assert time.perf_counter() - t0 < 0.05 < first and path.stat().st_mtime_ns == mtime
    print(f"conversion {first:.2f} s")


def test_truncated_model_bin_is_refused():
    parts, _ = wc.packaged_base_files()
    with pytest.raises(wc.ConversionError, match="ends early"):
        wc.read_ct2_model(parts[:1])


def test_alignment_heads_come_from_the_config(model):
    import gzip
    import base64
    import whisper

    packed = gzip.decompress(base64.b85decode(whisper._ALIGNMENT_HEADS["base"]))
    expected = np.frombuffer(packed, dtype=bool).reshape(6, 8)
    assert np.array_equal(model.alignment_heads.to_dense().cpu().numpy(), expected)


# --------------------------------------------------------------------------- transcription

def test_three_sentences_with_pauses(model, tmp_path):
    if not mediagen.have_espeak():
        pytest.skip("espeak-ng is not installed")
    wav, spans = mediagen.speech_with_pauses(SENTENCES, tmp_path / "speech.wav", pause=1.5)
    audio = _decode(mediagen.talking_video(wav, tmp_path / "talk.mp4"))
    t0 = time.perf_counter()
    utterances = tr.transcribe(audio, model, language="en")
    seconds = time.perf_counter() - t0
    assert all(isinstance(u, Utterance) for u in utterances)
    wer = tr.word_error_rate(" ".join(SENTENCES), " ".join(u.text for u in utterances))
    print(f"\n{len(audio) / 16000:.1f} s of audio in {seconds:.1f} s, WER {wer:.3f}")
    for u, (start, end) in zip(utterances, spans):
        print(f"  {u.start:6.2f} {u.end:6.2f} ({u.start - start:+.2f} / {u.end - end:+.2f})  {u.text}")
    assert wer <= 0.10
    assert len(utterances) == 3
    for u, (start, end), sentence in zip(utterances, spans, SENTENCES):
        assert abs(u.start - start) <= BOUNDARY_TOLERANCE and abs(u.end - end) <= BOUNDARY_TOLERANCE
        assert 0.0 <= u.start < u.end <= len(audio) / 16000
        assert tr.word_error_rate(sentence, u.text) <= 0.34
        assert u.avg_logprob < 0 and 0 <= u.no_speech_prob <= 1 and u.compression_ratio > 0


class _MustNotRun:
    """Stands in for a model on audio that must be answered without one."""

    device = torch.device("cpu")

    def transcribe(self, *args, **kwargs):
        raise AssertionError("the model ran on silence")


@pytest.mark.parametrize("audio", [
    np.zeros(16000 * 5, np.float32),                                         # digital silence
    np.random.default_rng(0).normal(0, 1e-4, 16000 * 5).astype(np.float32),  # faint hiss
    np.full(16000 * 3, 1e-5, np.float32),                                     # DC offset
    np.random.default_rng(1).normal(0, 0.1, 3200).astype(np.float32),         # 0.2 s: too short
    np.zeros(0, np.float32),
])
def test_silence_gives_no_utterances(audio):
    t0 = time.perf_counter()
    assert tr.transcribe(audio, _MustNotRun()) == []
    assert time.perf_counter() - t0 < 0.5


def test_silent_video_gives_no_utterances(model, tmp_path):
    video = tmp_path / "silent.mp4"   # built here: every input gets its own -t, so ffmpeg stops
    mediagen.ffmpeg("-f", "lavfi", "-t", "3", "-i", "testsrc=size=320x240:rate=25",
                    "-f", "lavfi", "-t", "3", "-i", "anullsrc=r=16000:cl=mono",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(video))
    assert tr.transcribe(_decode(video), model) == []


def test_words_on_silence_are_dropped():
    audio = np.zeros(16000 * 6, np.float32)
    audio[16000:32000] = 0.3 * np.sin(np.linspace(0, 2000 * np.pi, 16000))   # 1 s of sound
    regions = [(1.0, 2.0)]                                                    # heard as speech
    seg = {"no_speech_prob": 0.2, "avg_logprob": -0.4}
    thanks = cut.Piece([{"word": " Thank you.", "start": 4.0, "end": 5.0}], seg)
    assert tr._hallucinated(thanks, 4.0, 5.0, audio, regions)
    assert not tr._hallucinated(thanks, 0.9, 2.1, audio, regions)
    dots = cut.Piece([{"word": " ...", "start": 1.0, "end": 2.0}], seg)
    assert tr._hallucinated(dots, 1.0, 2.0, audio, regions)
    # seen here: base looped on 25 s of -50 dBFS hiss after speech, with a confident log-prob
    loop = cut.Piece([{"word": " I'm going to go to the next room.", "start": 4.0, "end": 6.0}],
                     {"no_speech_prob": 0.97, "avg_logprob": -0.22})
    hiss = audio + np.random.default_rng(0).normal(0, 3e-3, audio.size).astype(np.float32)
    assert tr._hallucinated(loop, 4.0, 6.0, hiss, tr.speech_regions(hiss))


def test_words_on_detected_speech_are_kept_however_unsure_whisper_is():
    """Under noise Whisper's no-speech probability rises on real speech: the detector decides."""
    audio = np.random.default_rng(0).normal(0, 0.05, 16000 * 4).astype(np.float32)
    unsure = cut.Piece([{"word": " Dogs are sitting by the door.", "start": 1.0, "end": 2.5}],
                       {"no_speech_prob": 0.9, "avg_logprob": -1.2})
    assert not tr._hallucinated(unsure, 0.9, 2.6, audio, [(1.0, 2.5)])
    assert tr._hallucinated(unsure, 0.9, 2.6, audio, [])


def test_the_detector_hears_speech_and_not_tones_noise_or_music(tmp_path):
    """Silero VAD finds espeak-ng speech; a pure tone, pink noise and a chord bed are not speech."""
    if not mediagen.have_espeak():
        pytest.skip("espeak-ng is not installed")
    from tests import hearing
    wav, spans = mediagen.speech_with_pauses(SENTENCES[:2], tmp_path / "speech.wav", pause=1.5)
    regions = tr.speech_regions(_decode(wav))
    assert len(regions) >= 2
    for start, end in spans:
        assert cut.overlap(regions, start, end) >= 0.8 * (end - start)
    assert cut.overlap(regions, spans[0][1] + 0.3, spans[1][0] - 0.3) == 0.0    # the pause
    tone = 0.3 * np.sin(np.linspace(0, 2 * np.pi * 440 * 5, 16000 * 5)).astype(np.float32)
    assert tr.speech_regions(tone) == []
    assert tr.speech_regions(hearing.pink_noise(16000 * 10)) == []
    assert tr.speech_regions(hearing.tone_bed(16000 * 10)) == []


@pytest.mark.parametrize("kind", ["noise", "music"])
@pytest.mark.parametrize("rms_db", [-20.0, -50.0])
def test_noise_and_music_alone_give_no_utterances(kind, rms_db):
    """Whisper is never even asked: the detector hears no speech (Whisper invents words on music),
    also when a quiet bed is raised 40 dB for it (vad.at_speaking_level)."""
    from tests import hearing
    bed = hearing.pink_noise(16000 * 12) if kind == "noise" else hearing.tone_bed(16000 * 12, rms_db=-20.0)
    bed = (bed / np.sqrt(np.mean(np.square(bed))) * 10 ** (rms_db / 20)).astype(np.float32)
    assert tr.transcribe(bed, _MustNotRun()) == []


@pytest.mark.parametrize("gain_db", [-30, -45])
def test_a_quiet_recording_is_heard_from_its_first_word(model, tmp_path, gain_db):
    """A sentence recorded far from the microphone (loud moments near -36 and -51 dBFS): Silero
    alone missed its first 0.2 s and all of it; raised for the detector, every word is heard."""
    if not mediagen.have_espeak():
        pytest.skip("espeak-ng is not installed")
    from core import vad
    wav = mediagen.speak("I cannot believe you did that to me.", tmp_path / "s.wav")
    quiet = tmp_path / "quiet.wav"
    mediagen.ffmpeg("-i", str(wav), "-af", f"volume={gain_db}dB", str(quiet))
    audio = _decode(quiet)
    assert vad.speech_regions(audio) == [] or vad.speech_regions(audio)[0][0] > 0.1   # what Silero hears alone
    utterances = tr.transcribe(audio, model, language="en")
    assert len(utterances) == 1 and utterances[0].start < 0.1
    assert tr.word_error_rate("I cannot believe you did that to me.", utterances[0].text) <= 0.25


def test_quiet_audio_is_raised_for_the_detector_and_loud_audio_is_left_alone():
    from core import vad
    quiet = (0.005 * np.sin(np.linspace(0, 2000 * np.pi, 16000))).astype(np.float32)   # raised 50x
    raised = vad.at_speaking_level(quiet)
    assert abs(float(np.percentile(np.abs(raised), 99.9)) - vad.LEVEL_TARGET) < 0.01
    faint = np.full(100, 1e-6, np.float32)
    assert float(np.abs(vad.at_speaking_level(faint)).max()) == pytest.approx(1e-6 * vad.MAX_GAIN)
    loud = (0.8 * np.sin(np.linspace(0, 2000 * np.pi, 16000))).astype(np.float32)
    assert vad.at_speaking_level(loud) is loud
    assert vad.at_speaking_level(np.zeros(0, np.float32)).size == 0


def test_long_silences_are_not_fed_to_whisper():
    regions = [(1.0, 2.0), (3.5, 5.0), (20.0, 22.0)]        # a 1.5 s pause, then 15 s of silence
    assert tr._clips(regions, 30.0) == [0.0, 6.0, 19.0, 23.0]


def test_a_long_pause_inside_a_segment_splits_it():
    regions = [(0.5, 1.6), (2.6, 3.5)]                       # a 1.0 s pause at 1.6-2.6
    words = [{"word": w, "start": s, "end": e} for w, s, e in
             [(" Come", 0.3, 0.8), (" here.", 0.8, 1.9), (" Now", 1.9, 2.9), (" please.", 2.9, 3.4)]]
    segment = {"text": " Come here. Now please.", "start": 0.3, "end": 3.4, "words": words}
    pieces = cut.pieces([segment], cut.gaps(regions, 4.0))
    assert [p.text for p in pieces] == ["Come here.", "Now please."]
    bounds = cut.bounds(pieces, regions, cut.gaps(regions, 4.0), 4.0)
    assert bounds[0] == pytest.approx((0.35, 1.75)) and bounds[1] == pytest.approx((2.45, 3.65))


# --------------------------------------------------------------------------- models and scoring

def test_second_load_is_cached(model):
    t0 = time.perf_counter()
    assert tr.load_whisper("base") is model
    assert time.perf_counter() - t0 < 0.01


def test_model_not_available_offline_is_a_clear_error():
    if os.path.isfile(os.path.expanduser("~/.cache/whisper/small.pt")):
        pytest.skip("small is already downloaded here")
    t0 = time.perf_counter()
    with pytest.raises(tr.TranscriptionError) as err:
        tr.load_whisper("small", device="cpu")
    message = str(err.value)
    assert "\n" not in message and "offline" in message and '"base"' in message
    assert time.perf_counter() - t0 < 30


def test_unknown_names_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(tr.TranscriptionError, match="Unknown Whisper model"):
        tr.load_whisper("gigantic-v9", device="cpu")
    with pytest.raises(tr.TranscriptionError, match="not found"):
        tr.load_whisper(str(tmp_path / "missing.pt"), device="cpu")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(tr.TranscriptionError, match="Cannot load"):
        tr.load_whisper(str(bad), device="cpu")


@pytest.mark.parametrize("reference, hypothesis, expected", [
    ("Kids are talking by the door.", "kids are talking by the door", 0.0),
    ("Kids are talking by the door.", "Kids are walking by the door.", 1 / 6),       # 1 substitution
    ("Kids are talking by the door.", "Kids talking by the door.", 1 / 6),           # 1 deletion
    ("Kids are talking by the door.", "The kids are talking by the red door.", 2 / 6),  # 2 insertions
    ("I don't know!", "I dont know", 0.0),
    ("one two three four", "four three two one", 1.0),                                # 4 substitutions
    ("hello", "", 1.0),
    ("", "", 0.0),
    ("", "hello", 1.0),
])
def test_word_error_rate(reference, hypothesis, expected):
    assert tr.word_error_rate(reference, hypothesis) == pytest.approx(expected)


# --------------------------------------------------------------------------- windows (core.whisper_batch)

def _talk(seconds: float, sentence: float = 2.3, pause: float = 1.0) -> list[tuple[float, float]]:
    """Speech regions of sentences `sentence` s long separated by `pause` s, from 0.5 s on."""
    regions, t = [], 0.5
    while t + sentence < seconds:
        regions.append((t, t + sentence))
        t += sentence + pause
    return regions


def test_windows_are_cut_in_pauses_and_balanced():
    regions = _talk(61.0)
    audio = np.zeros(61 * 16000, np.float32)
    windows = wb.plan_windows([(0.0, 61.0)], regions, audio)
    assert len(windows) == 3                                   # not 30 + 30 + a 1-s tail
    assert windows[0].start == 0.0 and windows[-1].end == 61.0
    for left, right in zip(windows, windows[1:]):
        assert left.end == right.start
        assert not any(a < left.end < b for a, b in regions)   # no sentence is cut in two
    lengths = [w.end - w.start for w in windows]
    assert max(lengths) <= wb.WINDOW_SECONDS - wb.EDGE_SECONDS and max(lengths) - min(lengths) < 4.0


def test_speech_without_a_pause_is_cut_at_its_quietest_point():
    audio = np.full(70 * 16000, 0.3, np.float32)
    audio[int(25.5 * 16000):int(25.51 * 16000)] = 0.0          # one 10-ms dip, no real pause
    windows = wb.plan_windows([(0.0, 70.0)], [(0.0, 70.0)], audio)
    assert windows[0].end == pytest.approx(25.5) and windows[-1].end == 70.0
    assert all(w.end - w.start <= wb.WINDOW_SECONDS - wb.EDGE_SECONDS for w in windows)


def test_padding_after_the_last_sentence_does_not_cost_a_window():
    """28.5 s whose speech ends at 27.0 s (then padding): one window, not two of 14 s. The 2-s edge
    margin keeps a sentence away from the window's end; silence after the last one needs none."""
    audio = np.zeros(30 * 16000, np.float32)
    regions = [(1.0 + 3.0 * i, 3.0 + 3.0 * i) for i in range(9)]            # the last ends at 27.0
    assert [(w.start, w.end) for w in wb.plan_windows([(0.0, 28.5)], regions, audio)] == [(0.0, 28.5)]
    late = regions + [(28.0, 28.4)]                                           # speech up to 28.4 s
    assert len(wb.plan_windows([(0.0, 28.5)], late, audio)) == 2
    assert len(wb.plan_windows([(0.0, 30.5)], regions, audio)) == 2            # never past 30 s


def test_short_audio_is_one_window_and_long_silences_stay_out():
    regions = [(1.0, 3.0), (40.0, 42.0)]
    clips = tr._clips(regions, 45.0)
    windows = wb.plan_windows(list(zip(clips[::2], clips[1::2])), regions, np.zeros(45 * 16000, np.float32))
    assert [(w.start, w.end) for w in windows] == [(0.0, 4.0), (39.0, 43.0)]


def test_windowed_decoding_matches_whisper_own_loop(model, tmp_path):
    """The batched windows give the words and boundaries openai-whisper's sliding loop gives."""
    if not mediagen.have_espeak():
        pytest.skip("espeak-ng is not installed")
    wav, _ = mediagen.speech_with_pauses(SENTENCES, tmp_path / "speech.wav", pause=1.0)
    audio = _decode(wav)
    windowed, sliding = tr.transcribe(audio, model), tr.transcribe(audio, model, sliding=True)
    assert [u.text for u in windowed] == [u.text for u in sliding]
    for a, b in zip(windowed, sliding):
        assert abs(a.start - b.start) <= 0.1 and abs(a.end - b.end) <= 0.1


def test_fp16_and_bigger_batches_only_on_a_gpu():
    assert wb.precision("cpu") == (torch.float32, wb.BATCH_CPU)
    assert wb.precision("cuda") == (torch.float16, wb.BATCH_CUDA)


@pytest.fixture(scope="module")
def fp32_model():
    """A second copy of Whisper base with the fp32 CPU decoder (not the cached int8 one)."""
    fresh = tr._load_model("base", "cpu")
    assert wb.speed_up_decoder(fresh, int8=False) == "fp32"
    return fresh


def test_fp32_cpu_decoder_reads_a_contiguous_output_projection(fp32_model):
    """The fp32 speed-up keeps the decoder's logits equal to openai-whisper's own computation."""
    decoder = fp32_model.decoder
    assert decoder.logits.weight_t.is_contiguous()
    assert not any("weight_t" in k for k in fp32_model.state_dict())      # a cache, never saved
    tokens = torch.tensor([[50258, 50259, 50359]])
    features = torch.randn(1, fp32_model.dims.n_audio_ctx, fp32_model.dims.n_audio_state)
    with torch.no_grad():
        ours = decoder(tokens, features)
        x = decoder.ln(_blocks(decoder, tokens, features))
        theirs = (x @ decoder.token_embedding.weight.T).float()
    assert torch.allclose(ours, theirs, atol=1e-3)


def test_cross_attention_laid_out_once_computes_openai_whispers_attention(model, fp32_model):
    """Decoding (with a kv cache) reads cross-attention keys and values laid out per head once
    (core.whisper_decoder); step by step it gives the logits of openai-whisper's own attention
    over the whole sequence (no cache, which word alignment still uses)."""
    from core import whisper_decoder as wd
    for m in (model, fp32_model):
        assert all(b.cross_attn.forward.__func__ is wd._cross_attention for b in m.decoder.blocks)
    decoder = fp32_model.decoder
    tokens = torch.tensor([[50258, 50259, 50359, 50363, 440, 1133], [50258, 50259, 50359, 50363, 291, 366]])
    features = torch.randn(2, fp32_model.dims.n_audio_ctx, fp32_model.dims.n_audio_state)
    with torch.no_grad():
        whole = decoder(tokens, features)
        cache, hooks = fp32_model.install_kv_cache_hooks()
        try:
            steps = [decoder(tokens[:, :4], features, kv_cache=cache)[:, -1]]
            steps += [decoder(tokens[:, i:i + 1], features, kv_cache=cache)[:, -1] for i in range(4, 6)]
        finally:
            for hook in hooks:
                hook.remove()
    assert torch.allclose(torch.stack(steps, 1), whole[:, 3:], atol=1e-3)
    assert (torch.stack(steps, 1) - whole[:, 3:]).abs().max() < 1e-4 * whole.abs().max()


def test_int8_cpu_decoder_hears_the_same_words_as_fp32(model, fp32_model, tmp_path):
    """The default CPU decoder is int8 (faster); on speech it gives fp32's words and boundaries."""
    if not mediagen.have_espeak():
        pytest.skip("espeak-ng is not installed")
    assert model.decoder.precision == "int8"
    wav, _ = mediagen.speech_with_pauses(SENTENCES, tmp_path / "speech.wav", pause=1.0)
    audio = _decode(wav)
    int8, fp32 = tr.transcribe(audio, model), tr.transcribe(audio, fp32_model)
    assert [u.text for u in int8] == [u.text for u in fp32]
    for a, b in zip(int8, fp32):
        assert abs(a.start - b.start) <= 0.1 and abs(a.end - b.end) <= 0.1


def test_bf16_encoder_is_opt_in_and_hears_the_same_words(model, tmp_path, monkeypatch):
    """$WORKBENCH_WHISPER_ENCODER=bf16 runs the CPU encoder in bfloat16 (where the CPU has it): the
    same words and boundaries as fp32, the default."""
    monkeypatch.delenv(wb.ENCODER_ENV, raising=False)
    assert wb.encoder_precision("cpu") == "fp32" and wb.encoder_precision("cuda") == "fp16"
    monkeypatch.setenv(wb.ENCODER_ENV, "bf16")
    if not native_bf16():
        assert wb.encoder_precision("cpu") == "fp32"
        pytest.skip("this CPU has no native bfloat16: the encoder stays fp32")
    if not mediagen.have_espeak():
        pytest.skip("espeak-ng is not installed")
    assert wb.encoder_precision("cpu") == "bf16"
    wav, _ = mediagen.speech_with_pauses(SENTENCES, tmp_path / "speech.wav", pause=1.0)
    audio = _decode(wav)
    bf16 = tr.transcribe(audio, model)
    monkeypatch.setenv(wb.ENCODER_ENV, "fp32")
    fp32 = tr.transcribe(audio, model)
    assert [u.text for u in bf16] == [u.text for u in fp32]
    for a, b in zip(bf16, fp32):
        assert abs(a.start - b.start) <= 0.1 and abs(a.end - b.end) <= 0.1


def test_bf16_top_encoder_keeps_the_voice_states_exactly(model, monkeypatch):
    """$WORKBENCH_WHISPER_ENCODER=bf16-top: only the blocks above the voice's block run in
    bfloat16, so the states the voice head reads are the fp32 ones bit for bit."""
    from core import voice
    monkeypatch.setenv(wb.ENCODER_ENV, "bf16-top")
    native = native_bf16()
    assert wb.encoder_precision("cpu") == ("bf16-top" if native else "fp32")
    x = torch.randn(1, model.dims.n_mels, 3000)
    with torch.no_grad():
        final, kept = wb.run_encoder_top_bf16(model.encoder, x)
        fp32_final, fp32_kept = voice.run_encoder(model.encoder, x)
    assert torch.equal(kept, fp32_kept)
    assert final.dtype == torch.float32 and not torch.equal(final, fp32_final)
    assert (final - fp32_final).norm() / fp32_final.norm() < 0.05


def test_bf16_bottom_encoder_is_close_to_fp32_and_selectable(model, monkeypatch):
    """$WORKBENCH_WHISPER_ENCODER=bf16-bottom (measured, not the default: README): the convolutions
    and the blocks up to the voice's in bfloat16, the blocks above in fp32."""
    from core import voice
    monkeypatch.setenv(wb.ENCODER_ENV, "bf16-bottom")
    assert wb.encoder_precision("cpu") == ("bf16-bottom" if native_bf16() else "fp32")
    x = torch.randn(1, model.dims.n_mels, 3000)
    with torch.no_grad():
        final, kept = wb.run_encoder_split_bf16(model.encoder, x, top=False)
        fp32_final, fp32_kept = voice.run_encoder(model.encoder, x)
    assert final.dtype == kept.dtype == torch.float32
    assert 0 < (kept - fp32_kept).norm() / fp32_kept.norm() < 0.05
    assert (final - fp32_final).norm() / fp32_final.norm() < 0.05


def test_int8_can_be_switched_off(monkeypatch):
    monkeypatch.setenv(wb.INT8_ENV, "0")
    fresh = tr._load_model("base", "cpu")
    assert wb.speed_up_decoder(fresh) == "fp32" and wb.speed_up_decoder(fresh) == "fp32"


def _blocks(decoder, tokens, features):
    x = decoder.token_embedding(tokens) + decoder.positional_embedding[:tokens.shape[-1]]
    for block in decoder.blocks:
        x = block(x, features, mask=decoder.mask)
    return x


# --------------------------------------------------------------------------- nothing real dropped

def test_unheard_speech_is_found_between_and_after_the_words():
    regions = [(1.0, 3.0), (5.0, 6.0), (8.0, 8.3)]
    segments = [{"start": 1.0, "end": 2.0, "words": [{"word": " One", "start": 1.0, "end": 1.4},
                                                      {"word": " two", "start": 1.5, "end": 2.0}]}]
    # 2.2-3.0 after the last word, all of 5.0-6.0; 8.0-8.3 is too short to be worth a second look
    assert recall.unheard(regions, segments) == [pytest.approx((2.2, 3.0)), (5.0, 6.0)]
    assert recall.unheard(regions[:1], [{"start": 1.0, "end": 3.0}]) == []        # segments without words


def test_speech_a_window_left_out_is_decoded_again(monkeypatch):
    """Whisper sometimes ends a window early and the speech after its last word is lost: it is
    decoded again in a window of its own. (Whisper does this only now and then, on real audio that
    cannot be made on demand here, so the first pass is played by a stand-in that stops early.)"""
    regions = [(1.0, 3.0), (12.0, 14.0)]
    calls = []

    def windows_stopping_early(model, audio, windows, language, temperatures, progress=False, speech=False,
                               regions=None, states_map=None):
        calls.append([(w.start, w.end) for w in windows])
        if len(calls) == 1:          # the first pass hears only the first sentence
            return {"language": "en", "segments": [_said(" Kids are talking by the door.", 1.1, 2.9)]}
        return {"language": "en", "segments": [_said(" Dogs are sitting by the door.", 12.1, 13.9)]}

    monkeypatch.setattr(tr, "transcribe_windows", windows_stopping_early)
    result = tr.decode(None, np.zeros(16 * 16000, np.float32), regions, "en")
    assert len(calls) == 2
    (lo, hi), = calls[1]
    assert lo >= 2.9 and lo <= 11.5 and hi >= 14.0               # around the lost speech, not the heard
    assert [s["text"] for s in result["segments"]] == [" Kids are talking by the door.",
                                                        " Dogs are sitting by the door."]


def test_long_pauses_are_shortened_before_whisper_and_its_times_come_back(monkeypatch):
    """Whisper hears the speech with its 9-s pause cut to 0.6 s (core.packing): one shorter audio;
    the words it returns land back on the speech where it lies in the file. (The decoder is a
    stand-in that answers where the speech lies in what it was given.)"""
    regions = [(1.0, 3.0), (12.0, 14.0)]
    given = []

    def hears_the_regions(model, audio, windows, language, temperatures, progress=False, speech=False,
                          regions=None, states_map=None):
        given.append((len(audio) / 16000, regions, states_map))
        (a1, b1), (a2, b2) = regions
        return {"language": "en", "segments": [_said(" Kids are talking by the door.", a1, b1),
                                               _said(" Dogs are sitting by the door.", a2, b2)]}

    monkeypatch.setattr(tr, "transcribe_windows", hears_the_regions)
    result = tr.decode(None, np.zeros(16 * 16000, np.float32), regions, "en")
    seconds, where, states_map = given[0]
    assert len(given) == 1 and states_map is not None               # nothing left to decode again
    assert seconds == pytest.approx(2.0 + 2.0 + 0.6 + 2 * 1.0, abs=0.05)    # not 16 s
    assert where[1][0] - where[0][1] == pytest.approx(0.6, abs=0.05)
    times = [(s["start"], s["end"]) for s in result["segments"]]
    assert times == [pytest.approx(r, abs=1e-6) for r in regions]
    assert all(a >= 12.0 and b <= 14.0 for w in result["segments"][1]["words"] for a, b in [(w["start"], w["end"])])


def test_a_sentence_crammed_into_no_time_is_decoded_again():
    """Whisper skipped a sentence said again and wrote it at the window's end with no time for its
    words: that text is dropped and the speech under it decoded again, instead of a sentence said
    twice over one clip (seen on 14 actors saying one sentence)."""
    regions = [(1.0, 3.0), (4.0, 6.0)]
    sentence = " Kids are talking by the door."
    crammed = _said(sentence, 5.9, 5.9)
    assert recall.crammed(crammed) and not recall.crammed(_said(sentence, 4.1, 5.9))
    redone = []

    def again(spans):
        redone.extend(spans)
        return [_said(sentence, 4.1, 5.9)]
    # said twice over the second clip: the crammed copy goes, nothing is left to redo
    twice = recall.second_look(again, regions, [_said(sentence, 1.1, 2.9), _said(sentence, 4.1, 5.5), crammed], 7.0)
    assert [s["text"] for s in twice] == [sentence] * 2 and redone == []
    # the crammed text was all there was over the second clip: its speech is decoded again
    placed = dict(crammed, words=[dict(w, start=4.1, end=4.6) if i == 0 else dict(w, start=4.6, end=4.6)
                                  for i, w in enumerate(crammed["words"])])
    fixed = recall.second_look(again, regions, [_said(sentence, 1.1, 2.9), placed], 7.0)
    assert [s["text"] for s in fixed] == [sentence] * 2
    assert len(redone) == 1 and redone[0][0] <= 4.0 and redone[0][1] >= 6.0
    assert [w["start"] for w in fixed[1]["words"]][0] == pytest.approx(4.1)


def test_a_second_look_that_only_guesses_adds_no_words():
    """The drawn-out tail of a fearful "door!" (actor 24, under AAC) was speech no word covered; the
    second look decoded it into "for" at word probability 0.02, a one-word utterance of its own in
    the app. A guess that unsure is not kept; what the second look hears surely still is."""
    regions = [(1.0, 3.5)]
    heard = [_said(" Kids are talking by the door!", 1.0, 2.8)]       # 2.8-3.5 s: speech, no word
    assert recall.unheard(regions, heard)

    def guesses(spans):
        tail = _said(" for", 2.8, 2.9)
        tail["words"][0]["probability"], tail["avg_logprob"], tail["no_speech_prob"] = 0.02, -1.22, 0.63
        return [tail]

    def hears(spans):
        tail = _said(" door!", 2.8, 3.4)
        tail["words"][0]["probability"] = 0.9
        return [tail]
    assert recall.guessed(guesses([])[0]) and not recall.guessed(hears([])[0])
    assert not recall.guessed(_said(" Hello.", 1.0, 2.0))               # no probability given: sure
    kept = recall.second_look(guesses, regions, heard, 4.0)
    assert [s["text"] for s in kept] == [" Kids are talking by the door!"]
    found = recall.second_look(hears, regions, heard, 4.0)
    assert [s["text"] for s in found] == [" Kids are talking by the door!", " door!"]


def test_quick_words_given_no_time_inside_a_placed_sentence_are_not_a_crammed_one():
    """Under pink noise the alignment gave "in a" of "I will be mercenaries in a minute." no time;
    counting that segment as crammed dropped it and decoded its speech again into "I will be more
    kid I made it." (the 8 clips' WER 11.7 -> 18.3 %). A crammed copy starts or ends with such
    words (the first copy squeezed at its end, the second at its start)."""
    noisy = _said(" I will be mercenaries in a minute.", 23.81, 25.21)
    for w in noisy["words"][4:6]:                       # "in", "a": no time, between placed words
        w["start"] = w["end"] = noisy["words"][3]["end"]
    assert not recall.crammed(noisy)
    first, second = _said(" Dogs are sitting by the door.", 23.94, 25.05), _said(" Dogs are sitting by the door.", 25.05, 25.43)
    for w in first["words"][4:]:                        # "the door." at the instant the next copy starts
        w["start"] = w["end"] = 25.05
    for w in second["words"][:4]:                       # "Dogs are sitting by" at that same instant
        w["start"] = w["end"] = 25.05
    assert recall.crammed(first) and recall.crammed(second)
    one = _said(" Hello.", 1.0, 1.0)                    # a one-word segment is never "crammed"
    assert not recall.crammed(one)


def test_new_words_never_land_inside_a_sentence_already_heard():
    """Whisper skipped a repeated ending and spread one sentence over two clips: its first words on
    the first clip, its last on the second, the second clip's start unheard. The second look decodes
    the whole sentence's stretch again, not only the unheard start between its words (which put a
    second "Kids are talking" inside the first sentence, seen on 28 acted clips)."""
    regions = [(1.0, 3.0), (4.5, 6.5)]
    spread = _said(" Kids are talking by the door.", 1.0, 6.5)
    spread["words"] = [dict(w, start=1.0 + 0.6 * i, end=1.5 + 0.6 * i) for i, w in enumerate(spread["words"][:3])] + \
                      [dict(w, start=5.6 + 0.3 * i, end=5.85 + 0.3 * i) for i, w in enumerate(spread["words"][3:])]
    spans = recall.spans_to_redo(regions, [spread], 8.0)
    assert spans == [(1.0, 6.45)]                      # the whole sentence, both clips (not 4.0-5.6)
    assert recall.spans_to_redo(regions, [_said(" Kids are talking by the door.", 1.0, 3.0)], 8.0) == [(4.0, 7.0)]


def _said(text: str, start: float, end: float) -> dict:
    words = text.split()
    step = (end - start) / len(words)
    return {"text": text, "start": start, "end": end, "no_speech_prob": 0.1, "avg_logprob": -0.2,
            "words": [{"word": " " + w, "start": start + i * step, "end": start + (i + 1) * step}
                      for i, w in enumerate(words)]}


def test_a_word_spanning_a_whole_pause_marks_both_sides_for_a_second_look():
    regions = [(1.0, 2.5), (4.0, 5.5), (8.0, 9.0)]
    stretched = dict(_said(" the door.", 2.4, 5.4))
    stretched["words"] = [{"word": " the", "start": 2.4, "end": 4.9},            # over the 2.5-4.0 pause
                          {"word": " door.", "start": 4.9, "end": 5.4}]
    heard = [_said(" Kids are talking by", 1.0, 2.4), stretched, _said(" Hello.", 8.0, 9.0)]
    assert recall.lost_track(regions, heard) == [0, 1]
    assert recall.spans_to_redo(regions, heard, 10.0) == [(0.5, 3.25), (3.25, 6.75)]


def test_a_second_pass_replaces_words_only_where_it_hears_better():
    old = [_said(" Kids are talking by", 1.0, 2.4), _said(" the door.", 4.0, 5.4)]
    new = [_said(" Kids are talking by the door.", 1.0, 2.4), _said(" Dogs are sitting by the door.", 4.0, 5.4)]
    fixed = recall.replace(old, new, [(0.5, 3.25), (3.25, 6.75)])
    assert " ".join(w["word"].strip() for s in fixed for w in s["words"]) == \
        "Kids are talking by the door. Dogs are sitting by the door."
    worse = [_said(" Kids", 1.0, 2.4), dict(_said(" the floor.", 4.0, 5.4), avg_logprob=-0.9)]
    kept = recall.replace(old, worse, [(0.5, 3.25), (3.25, 6.75)])
    assert " ".join(w["word"].strip() for s in kept for w in s["words"]) == "Kids are talking by the door."


def test_openmp_threads_wait_passively_unless_told_otherwise():
    """Importing core (before torch) makes OpenMP's idle threads sleep instead of spinning: on a busy
    machine spinning wasted a fifth of the analysis. A value given in the environment wins."""
    import sys
    code = "import core, os, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    root = Path(__file__).resolve().parents[1]
    run = lambda e: subprocess.run([sys.executable, "-c", code], env=e, cwd=root, capture_output=True,
                                   text=True, check=True).stdout.strip()
    assert run(env) == "PASSIVE"
    assert run({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_the_alignment_median_filter_is_openai_whispers_bit_for_bit():
    """core.whisper_align picks the median with min/max instead of a sort: the same values."""
    import whisper.timing as timing

    from core import whisper_align
    original = whisper_align._ORIGINAL or timing.median_filter
    torch.manual_seed(0)
    for shape in [(6, 90, 1500), (1, 6, 40, 300), (3, 40), (50,), (2, 5, 3)]:
        x = torch.rand(*shape)
        x[..., ::11] = 0.5                               # ties
        for width in (7, 3):
            assert torch.equal(whisper_align.median_filter(x, width), original(x, width)), (shape, width)
    whisper_align.speed_up_alignment()
    assert timing.median_filter is whisper_align.median_filter


def test_time_warping_compiled_once_finds_openai_whispers_path():
    """core.whisper_align.dtw_cpu replaces openai-whisper's (compiled anew in every process, 1.7-3.4 s
    before the first word time): the same path on random cost matrices, ties included."""
    import whisper.timing as timing

    from core import whisper_align
    whisper_align.speed_up_alignment()
    assert timing.dtw_cpu is whisper_align.dtw_cpu
    original = whisper_align._ORIGINAL_DTW
    rng = np.random.default_rng(0)
    for trial in range(60):
        x = rng.normal(size=(int(rng.integers(1, 30)), int(rng.integers(1, 120))))
        if trial % 3 == 0:
            x = np.round(x)                          # ties between moves
        if trial % 7 == 0:
            x = np.zeros_like(x)
        ours, theirs = whisper_align.dtw_cpu(x.copy()), original(x.copy())
        assert ours.shape == theirs.shape and np.array_equal(ours, theirs), x.shape
        assert ours[:, 0].tolist() == [0, 0] and ours[:, -1].tolist() == [x.shape[0] - 1, x.shape[1] - 1]


def test_loading_whisper_readies_the_time_warping_before_the_first_analysis():
    """The warping is compiled (or loaded from numba's cache) with the model, not at the first word
    time of the first analysis, where openai-whisper's own cost every process 1.7-3.4 s."""
    import whisper.timing as timing

    from core import whisper_align
    tr.load_whisper()
    assert timing.dtw_cpu is whisper_align.dtw_cpu and whisper_align.dtw_cpu.signatures
