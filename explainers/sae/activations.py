"""A layer's residual stream over many texts: every token's vector, each context once.

Agent prompts share long beginnings (the instructions, the game's objective). A token's
state depends only on the tokens before it, so where texts share a prefix its states are
the same in all of them: the prefix runs once (its keys and values kept,
`workbench.prefix_cache`), its rows are stored once, and only each text's own suffix runs,
in a batch over the prefix's cache. Rows are read at the layer's hook point through
`workbench.anatomy` (the one reader), which stops the forward after that layer.

Each text's first token is left out: its state is the attention sink's, orders of magnitude
larger than the others in most models, and no feature of the text (SAELens and Anthropic
leave out the BOS position the same way).

    >>> acts = collect_activations(lm, texts, layer=15)                 # doctest: +SKIP
    >>> acts.values.shape, acts.text[:3], acts.position[:3]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from explainers.explainer import Progress
from workbench import distributed
from workbench.anatomy import Hooks, capture, model_anatomy, trunk
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.prefix_cache import common_length, compute_prefix, padded_batch

MIN_SHARED_PREFIX = 32  # tokens; shorter common beginnings are not worth a cache


@dataclass
class Activations:
    """Rows of one hook point: `values` [N, D] (float32, CPU), and for each row the text it
    was read in (`text`, an index into `tokens`) and its position there. A shared prefix's
    rows are stored once, under the first text of its group."""

    values: torch.Tensor
    text: np.ndarray
    position: np.ndarray
    tokens: list[list[int]]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def last_rows(self) -> np.ndarray:
        """[texts]: the row of each text's last token (its decision token)."""
        out = np.full(len(self.tokens), -1, dtype=np.int64)
        lengths = np.array([len(t) for t in self.tokens])
        last = self.position == lengths[self.text] - 1
        out[self.text[last]] = np.nonzero(last)[0]
        return out


def tokenize(lm: LoadedModel, texts: Sequence[str]) -> list[list[int]]:
    return [lm.tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]


def collect_activations(
    lm: LoadedModel,
    texts: Sequence[str],
    layer: int,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> Activations:
    """The residual stream entering resid layer `layer` at every token of `texts` but each
    text's first, shared prefixes read once (see the module). `progress(texts done, N)`.

    Under torchrun each rank reads a share of the texts and rank 0 gets all rows (the
    others get an empty set)."""
    anatomy = model_anatomy(lm)
    (layer,) = anatomy.check_layers("resid", [layer])
    name = anatomy.name("resid", layer)
    ids = tokenize(lm, texts)
    short = [i + 1 for i, t in enumerate(ids) if len(t) < 2]
    if short:
        raise WorkbenchError(f"text {short[0]} has fewer than 2 tokens")
    groups = prefix_groups(ids) if lm.kind == "causal" else [([i], 0) for i in range(len(ids))]
    mine = distributed.shard(groups, weights=[sum(len(ids[i]) for i in g) for g, _ in groups])
    done = 0
    parts: list[tuple[torch.Tensor, np.ndarray, np.ndarray]] = []
    plain: list[int] = []
    for members, shared in mine:
        read = _group(lm, name, ids, members, shared, batch_size) if shared else None
        if read is None:
            plain.extend(members)
            continue
        parts.extend(read)
        done += len(members)
        if progress is not None:
            progress(done, len(ids))
    plain.sort(key=lambda i: len(ids[i]))
    for k in range(0, len(plain), batch_size):
        batch = plain[k : k + batch_size]
        parts.append(_plain(lm, name, ids, batch))
        done += len(batch)
        if progress is not None:
            progress(done, len(ids))
    if distributed.launched():
        gathered = distributed.gather(parts)
        parts = gathered or []
    if not parts:
        return Activations(torch.zeros((0, 0)), np.zeros(0, np.int64), np.zeros(0, np.int64), ids)
    # Rows in (text, position) order, however the texts were grouped or split over ranks:
    # the same texts give the same rows, so the same seed trains the same SAE anywhere.
    text = np.concatenate([p[1] for p in parts])
    position = np.concatenate([p[2] for p in parts])
    order = np.lexsort((position, text))
    values = torch.cat([p[0] for p in parts])[torch.from_numpy(order)]
    return Activations(values, text[order], position[order], ids)


def prefix_groups(ids: list[list[int]]) -> list[tuple[list[int], int]]:
    """Texts grouped by a shared prefix: [(text indices, prefix length)]; a text alone has
    prefix length 0. After a lexicographic sort, texts with a common beginning are adjacent;
    a group grows while the next text shares at least MIN_SHARED_PREFIX tokens with its
    first. The prefix stops one token before the group's shortest text ends, so every text
    has a suffix of its own."""
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    groups: list[tuple[list[int], int]] = []
    k = 0
    while k < len(order):
        first = ids[order[k]]
        members, shared = [order[k]], len(first) - 1
        j = k + 1
        while j < len(order):
            common = common_length(first, ids[order[j]])
            if common < MIN_SHARED_PREFIX:
                break
            shared = min(shared, common, len(ids[order[j]]) - 1)
            members.append(order[j])
            j += 1
        if len(members) > 1 and shared >= MIN_SHARED_PREFIX:
            groups.append((members, shared))
        else:
            groups.extend(([i], 0) for i in members)
        k = j
    return groups


Part = tuple[torch.Tensor, np.ndarray, np.ndarray]


def _rows(
    states: torch.Tensor,
    batch: list[int],
    ids: list[list[int]],
    start: int,
    stop: int | None = None,
) -> Part:
    """The real positions of a right-padded batch's states [B, n, D] (position `start` + j
    for column j, up to `stop`), but each text's first token."""
    values, texts, positions = [torch.zeros((0, states.shape[-1]))], [], []
    for row, i in enumerate(batch):
        first = max(start, 1)
        end = len(ids[i]) if stop is None else min(stop, len(ids[i]))
        if end <= first:
            continue
        values.append(states[row, first - start : end - start].float().cpu())
        texts.append(np.full(end - first, i, np.int64))
        positions.append(np.arange(first, end, dtype=np.int64))
    empty = np.zeros(0, np.int64)
    return torch.cat(values), np.concatenate([empty, *texts]), np.concatenate([empty, *positions])


def _plain(lm: LoadedModel, name: str, ids: list[list[int]], batch: list[int]) -> Part:
    input_ids, mask = padded_batch([ids[i] for i in batch], lm.tokenizer.pad_token_id or 0)
    states = capture(lm, [name], input_ids=input_ids, attention_mask=mask).activations[name]
    return _rows(states, batch, ids, 0)


def _group(
    lm: LoadedModel,
    name: str,
    ids: list[list[int]],
    members: list[int],
    shared: int,
    batch_size: int,
) -> list[Part] | None:
    """A group's rows: its prefix's once, then each member's suffix over the prefix's
    cache (None: the model's cache cannot be reused)."""
    point = model_anatomy(lm).point(name)
    kept: list[torch.Tensor] = []
    prefix_ids = torch.tensor(ids[members[0]][:shared], device=lm.device).unsqueeze(0)
    with Hooks() as hooks, torch.no_grad():
        hooks.add(point, lambda x: kept.append(x.detach()))
        prefix, _ = compute_prefix(trunk(lm), input_ids=prefix_ids)
    if prefix is None:
        return None
    parts = [_rows(kept[0], [members[0]], ids, 0, stop=shared)]
    pad = lm.tokenizer.pad_token_id or 0
    for k in range(0, len(members), batch_size):
        batch = members[k : k + batch_size]
        input_ids, mask = padded_batch([ids[i] for i in batch], pad, shared)
        states = capture(
            lm, [name], input_ids=input_ids, attention_mask=mask, cache=prefix.for_batch(len(batch))
        ).activations[name]
        parts.append(_rows(states, batch, ids, shared))
    return parts
