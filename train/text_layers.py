"""The text encoder in training: a frozen bottom computed once, a tuned top run every step.

The encoder's bottom layers stay frozen, so their output is computed once per example and kept
in memory (frozen_states); each step runs only the tuned top layers (text_vectors) and the app's
own pooling (TextEncoder.pool). tune_setup decides which tensors learn.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from core.text import SEGMENT_KEY, TextEncoder

from .data import TextExample


def run_layers(bert, hidden: torch.Tensor, attention_mask: torch.Tensor, layers) -> torch.Tensor:
    """Run some of the encoder's layers with the same attention mask the model builds itself
    (and, for MPNet, the relative position bias its encoder adds in every layer)."""
    from transformers.masking_utils import create_bidirectional_mask
    mask = create_bidirectional_mask(config=bert.config, inputs_embeds=hidden, attention_mask=attention_mask)
    if hasattr(bert.encoder, "compute_position_bias"):                 # MPNet
        bias = bert.encoder.compute_position_bias(hidden)
        for layer in layers:
            hidden = layer(hidden, mask, bias)[0]
        return hidden
    for layer in layers:
        hidden = layer(hidden, mask)
    return hidden


def tune_setup(encoder: TextEncoder, tune: int, attention: int):
    """Freeze the encoder except its top `tune` layers and the self-attention of `attention` below.

    Returns (first layer run in every step, those layers, the trainable tensors by state-dict name,
    the fully tuned layer indices, the attention-only layer indices).
    """
    layers = encoder.bert.encoder.layer
    n = len(layers)
    k = max(0, min(tune, n))
    a = max(0, min(attention, n - k))
    first = n - k - a
    for p in encoder.parameters():
        p.requires_grad_(False)
    tuned = layers[first:]
    for j, layer in enumerate(tuned):
        for p in (layer if first + j >= n - k else layer.attention).parameters():
            p.requires_grad_(True)
    trainable = {f"bert.encoder.layer.{first + j}.{name}": p for j, layer in enumerate(tuned)
                 for name, p in layer.named_parameters() if p.requires_grad}
    return first, tuned, trainable, list(range(n - k, n)), list(range(first, n - k))


@torch.no_grad()
def frozen_states(encoder: TextEncoder, examples: list[TextExample], n_frozen: int,
                  batch_size: int = 64, quiet: bool = False) -> list[dict]:
    """Per example: the output of the first `n_frozen` layers (embeddings when 0), unpadded."""
    from tqdm import tqdm
    encoder.eval()
    bert = encoder.bert
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].text) + len(examples[i].context))
    out: list[dict] = [{}] * len(examples)
    for start in tqdm(range(0, len(order), batch_size), desc="encoding (frozen layers)", unit="batch",
                      disable=quiet, file=sys.stderr):
        idx = order[start:start + batch_size]
        batch = encoder.tokenize([examples[i].text for i in idx], [examples[i].context for i in idx])
        types = batch.get("token_type_ids")
        hidden = bert.embeddings(input_ids=batch["input_ids"], **({} if types is None else {"token_type_ids": types}))
        hidden = run_layers(bert, hidden, batch["attention_mask"], bert.encoder.layer[:n_frozen])
        segments = types if types is not None else batch[SEGMENT_KEY]     # what pooling reads (TextEncoder.pool)
        for row, i in enumerate(idx):
            n = int(batch["attention_mask"][row].sum())
            out[i] = {"hidden": hidden[row, :n].clone(), "token_type_ids": segments[row, :n].clone()}
    return out


def stored_frozen_states(encoder: TextEncoder, examples: list[TextExample], n_frozen: int, folder: Path | None,
                         quiet: bool = False, log=print) -> list[dict]:
    """frozen_states, kept in `folder` under a name made of everything they depend on (the frozen
    layers' weights, the texts and contexts, the token limit) and read back from there next time,
    so a resumed run does not compute them again (MPNet's bottom layers over MELD train take half
    an hour on these busy cores). `folder` None: computed, not kept."""
    from core.cache import tensors_digest
    if folder is None:
        return frozen_states(encoder, examples, n_frozen, quiet=quiet)
    bert = encoder.bert
    part = {f"embeddings.{k}": v for k, v in bert.embeddings.state_dict().items()}
    for i in range(n_frozen):
        part.update({f"layer.{i}.{k}": v for k, v in bert.encoder.layer[i].state_dict().items()})
    h = hashlib.sha256(tensors_digest(part).encode())
    h.update(json.dumps([encoder.max_tokens, [(e.text, e.context) for e in examples]]).encode())
    path = Path(folder) / f"states-{h.hexdigest()[:16]}.pt"
    if path.is_file():
        try:
            states = torch.load(str(path), map_location="cpu", weights_only=True)
            log(f"frozen layers' output for {len(states)} examples read from {path}")
            return states
        except Exception as err:                       # a partial or foreign file: compute again
            log(f"could not read {path} ({type(err).__name__}): computing it again")
    states = frozen_states(encoder, examples, n_frozen, quiet=quiet)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(states, str(tmp))
    os.replace(tmp, path)
    return states


def collate(items: list[dict]) -> dict:
    """Pad cached states into a batch: hidden [B, T, d], attention_mask and token_type_ids [B, T]."""
    width = max(it["hidden"].shape[0] for it in items)
    dim = items[0]["hidden"].shape[1]
    device = items[0]["hidden"].device
    hidden = torch.zeros(len(items), width, dim, device=device)
    mask = torch.zeros(len(items), width, dtype=torch.long, device=device)
    types = torch.zeros(len(items), width, dtype=torch.long, device=device)
    for b, it in enumerate(items):
        n = it["hidden"].shape[0]
        hidden[b, :n], mask[b, :n], types[b, :n] = it["hidden"], 1, it["token_type_ids"]
    return {"hidden": hidden, "attention_mask": mask, "token_type_ids": types}


def text_vectors(encoder: TextEncoder, tuned, batch: dict) -> torch.Tensor:
    """Top layers on cached states, then the app's pooling (TextEncoder.pool)."""
    hidden = run_layers(encoder.bert, batch["hidden"], batch["attention_mask"], tuned)
    return TextEncoder.pool(hidden, batch)


def length_batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffled batches of similar lengths (less padding), in a shuffled order."""
    order = rng.permutation(len(lengths)).tolist()
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
