"""Extra loss terms added to the seq2seq cross-entropy (``training.extra_loss``), in a registry.

A term is ``f(model, inputs, outputs) -> scalar tensor``; register a new one in :data:`EXTRA_LOSSES` and
name it in the config — the training loop itself never changes.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

ExtraLoss = Callable[[torch.nn.Module, dict[str, torch.Tensor], Any], torch.Tensor]


def copy_unlikelihood_loss(model: torch.nn.Module, inputs: dict[str, torch.Tensor], outputs: Any) -> torch.Tensor:
    """Unlikelihood penalty on copying input tokens that the reference removed.

    For each example the candidates are the source tokens absent from its target (for detoxification
    pairs these are, overwhelmingly, the toxic words); the term is ``-log(1 - p(candidate))`` summed over
    candidates and averaged over target positions (Welleck et al., 2019), pushing probability mass away
    from verbatim copies of what had to go.
    """
    labels = inputs["labels"]
    source = inputs["input_ids"]
    config = getattr(model, "config", None)
    # Copying pad/eos/start tokens is never the problem; T5 uses 0 (pad = decoder start) and 1 (eos).
    special = {
        getattr(config, name, None) for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id")
    } - {None} or {0, 1}
    batch, _ = labels.shape
    cand_lists = []
    for b in range(batch):
        tgt = set(labels[b][labels[b] >= 0].tolist())
        cand = sorted(set(source[b].tolist()) - tgt - special)
        cand_lists.append(cand)
    width = max((len(c) for c in cand_lists), default=0)
    if width == 0:
        return outputs.logits.new_zeros(())
    cand = torch.zeros(batch, width, dtype=torch.long, device=labels.device)
    cand_mask = torch.zeros(batch, width, dtype=torch.bool, device=labels.device)
    for b, c in enumerate(cand_lists):
        cand[b, : len(c)] = torch.tensor(c, dtype=torch.long)
        cand_mask[b, : len(c)] = True
    log_probs = outputs.logits.float().log_softmax(-1)  # (B, T, V)
    steps = log_probs.size(1)
    p = log_probs.gather(2, cand[:, None, :].expand(batch, steps, width)).exp()  # (B, T, C)
    ul = -torch.log1p(-p.clamp(max=1 - 1e-6))
    ul = (ul * cand_mask[:, None, :]).sum(-1)  # (B, T)
    positions = labels >= 0
    return (ul * positions).sum() / positions.sum().clamp(min=1)


EXTRA_LOSSES: dict[str, ExtraLoss] = {"copy_unlikelihood": copy_unlikelihood_loss}
