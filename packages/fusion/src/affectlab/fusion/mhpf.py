"""Multi-Head Probability Fusion (MHPF): per-class, per-head weights over modalities, mixed by a head gate.

Each modality m gives a probability vector p_m over C basic-emotion classes. With weights W of shape
heads x modalities x classes and a gate g of shape heads (9th ABAW, zero-shot multimodal compound expressions):

    alpha[h, m, c] = softmax over m of W[h, m, c]          (separately for every head h and class c)
    q_h[c]         = sum_m alpha[h, m, c] * p_m[c]
    P[c]           = sum_h softmax(g)_h * q_h[c]

A modality missing for a segment is masked out of the softmax over m, so the weights of the present ones are
renormalised to sum to 1. Because alpha depends on c, P does not sum to 1 over the classes in general; the training
loss and `fused_probabilities` renormalise it (a per-segment constant, so the argmax is unchanged).

`MultiHeadProbabilityFusion` learns W and g directly; `InputDependentMHPF` predicts them per segment with a small MLP
on the concatenated modality probabilities. Both share `mhpf_combine`. `MhpfBank` trains one MHPF per modality subset
side by side (the modality ablation): net k sees only the modalities of subset k, the others masked as missing.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


def modality_weights(
    weights: torch.Tensor, gate: torch.Tensor, present: torch.Tensor, check: bool = True
) -> torch.Tensor:
    """The weight of each modality per class, sum_h softmax(g)_h * alpha[h, m, c]: [B, M, C].

    weights [H, M, C] or [B, H, M, C]; gate [H] or [B, H]; present [B, M] bool. Since P[c] = sum_m of these times
    p_m[c], this is MHPF's whole effect on a segment (and what the experiment draws as a heat-map).
    check=False skips the test that every segment has a modality (it reads values, which torch.func.vmap forbids).
    """
    if weights.dim() == 3:
        weights = weights.unsqueeze(0)
    if gate.dim() == 1:
        gate = gate.unsqueeze(0)
    if check and not bool(present.any(dim=1).all()):
        empty = torch.nonzero(~present.any(dim=1)).flatten().tolist()
        raise ValueError(f"segments at batch rows {empty[:5]} have no modality present; expected at least one")
    alpha = torch.softmax(weights.masked_fill(~present[:, None, :, None], float("-inf")), dim=2)  # [B, H, M, C]
    return (torch.softmax(gate, dim=-1)[:, :, None, None] * alpha).sum(dim=1)


def mhpf_combine(
    probs: torch.Tensor, weights: torch.Tensor, gate: torch.Tensor, present: torch.Tensor | None = None,
    check: bool = True,
) -> torch.Tensor:
    """P of the docstring above. probs [B, M, C]; weights [H, M, C] or [B, H, M, C]; gate [H] or [B, H];
    present [B, M] bool (None: all present). Returns [B, C]."""
    if probs.dim() != 3:
        raise ValueError(f"probs has shape {tuple(probs.shape)}; expected [batch, modalities, classes]")
    present = _all_present(probs) if present is None else present
    # a missing modality's probabilities may be NaN: zero them so 0 * NaN never reaches the sum
    known = torch.where(present[:, :, None], probs, torch.zeros((), dtype=probs.dtype, device=probs.device))
    return (modality_weights(weights, gate, present, check) * known).sum(dim=1)


def _all_present(probs: torch.Tensor) -> torch.Tensor:
    return torch.ones(probs.shape[:2], dtype=torch.bool, device=probs.device)


def fused_probabilities(fused: torch.Tensor) -> torch.Tensor:
    """MHPF's output renormalised to sum to 1 over the classes."""
    return fused / fused.sum(dim=-1, keepdim=True).clamp_min(1e-12)


class MultiHeadProbabilityFusion(nn.Module):
    """MHPF with learned W [heads, modalities, classes] and gate g [heads]; 3 heads as published."""

    def __init__(self, num_modalities: int, num_classes: int = 8, num_heads: int = 3, init_std: float = 0.01):
        super().__init__()
        # small random W breaks the symmetry between heads; all-zero W would keep every head identical
        self.weights = nn.Parameter(torch.randn(num_heads, num_modalities, num_classes) * init_std)
        self.gate = nn.Parameter(torch.zeros(num_heads))

    def forward(self, probs: torch.Tensor, present: torch.Tensor | None = None, check: bool = True) -> torch.Tensor:
        return mhpf_combine(probs, self.weights, self.gate, present, check)

    def effective_weights(
        self, probs: torch.Tensor, present: torch.Tensor | None = None, check: bool = True
    ) -> torch.Tensor:
        """[B, M, C] modality weights per segment (the same for every segment with the same modalities present)."""
        present = _all_present(probs) if present is None else present
        return modality_weights(self.weights, self.gate, present, check)


class InputDependentMHPF(nn.Module):
    """MHPF whose W and g come from an MLP on the concatenated modality probabilities of each segment.

    The MLP also sees the presence mask, so "modality absent" and "modality says all zeros" differ.
    """

    def __init__(self, num_modalities: int, num_classes: int = 8, num_heads: int = 3, hidden: int = 64):
        super().__init__()
        self.shape = (num_heads, num_modalities, num_classes)
        inputs = num_modalities * num_classes + num_modalities
        outputs = num_heads * num_modalities * num_classes + num_heads  # W and g
        self.mlp = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))

    def _weights_and_gate(self, probs: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        known = torch.where(present[:, :, None], probs, torch.zeros((), dtype=probs.dtype, device=probs.device))
        out = self.mlp(torch.cat([known.flatten(1), present.to(probs.dtype)], dim=1))
        heads, modalities, classes = self.shape
        split = heads * modalities * classes
        return out[:, :split].view(-1, heads, modalities, classes), out[:, split:]

    def forward(self, probs: torch.Tensor, present: torch.Tensor | None = None, check: bool = True) -> torch.Tensor:
        present = _all_present(probs) if present is None else present
        return mhpf_combine(probs, *self._weights_and_gate(probs, present), present, check)

    def effective_weights(
        self, probs: torch.Tensor, present: torch.Tensor | None = None, check: bool = True
    ) -> torch.Tensor:
        present = _all_present(probs) if present is None else present
        return modality_weights(*self._weights_and_gate(probs, present), present, check)


MHPF_KINDS = {"static": MultiHeadProbabilityFusion, "input_dependent": InputDependentMHPF}


def create_mhpf(kind: str, num_modalities: int, num_classes: int = 8, num_heads: int = 3) -> nn.Module:
    """`static` (learned W, g) or `input_dependent` (W, g from an MLP)."""
    if kind not in MHPF_KINDS:
        raise ValueError(f"MHPF kind {kind!r}; expected one of {sorted(MHPF_KINDS)}")
    return MHPF_KINDS[kind](num_modalities, num_classes=num_classes, num_heads=num_heads)


def mhpf_loss(
    fused: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Class-weighted cross-entropy of the renormalised fused probabilities (targets are class indices).

    fused [B, C], or [K, B, C] for K nets (a bank) whose losses are summed; class_weights [C] or [K, C]; valid [B]
    or [K, B] marks the rows that count (a bank net with none of its modalities present has nothing to learn there).
    Per net this is torch's weighted NLL: sum_b w[y_b] * -log P_b[y_b] / sum_b w[y_b] over the valid rows.
    """
    log_probs = torch.log(fused_probabilities(fused).clamp_min(1e-12))
    picked = -log_probs.gather(-1, target.expand(log_probs.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    if class_weights is None:
        class_weights = torch.ones(log_probs.shape[-1], dtype=log_probs.dtype, device=log_probs.device)
    weight = torch.gather(class_weights.expand(*log_probs.shape[:-2], -1), -1, target.expand(picked.shape))
    if valid is not None:
        weight = weight * valid.to(weight.dtype)
    return ((weight * picked).sum(-1) / weight.sum(-1).clamp_min(1e-12)).sum()


class MhpfBank(nn.Module):
    """K MHPFs of one kind trained side by side, net k fusing only the modalities of `subsets[k]` (the others are
    masked as missing, so they get weight 0 and no gradient). Equivalent to K separate trainings on the same batches
    (the parameters are disjoint and Adam is per parameter), in one vectorised pass: the modality ablation cheaply.

    forward(probs [B, M, C], present [B, M]) -> (fused [K, B, C], valid [K, B]); valid is False where net k has
    none of its modalities for that segment (its output there is meaningless and must be ignored).
    """

    def __init__(self, kind: str, num_modalities: int, subsets: Sequence[Sequence[int]], num_classes: int = 8,
                 num_heads: int = 3):
        super().__init__()
        if not subsets or any(not subset for subset in subsets):
            raise ValueError(f"subsets {list(subsets)}; expected non-empty lists of modality indices")
        mask = torch.zeros(len(subsets), num_modalities, dtype=torch.bool)
        for k, subset in enumerate(subsets):
            mask[k, list(subset)] = True
        self.register_buffer("subsets", mask)
        nets = [create_mhpf(kind, num_modalities, num_classes, num_heads) for _ in subsets]
        params, _ = stack_module_state(nets)
        self.names = list(params)
        self.params = nn.ParameterList([nn.Parameter(params[name]) for name in self.names])
        # the architecture only (its values are self.params), kept out of the module tree so .to()/.cpu() skip it
        object.__setattr__(self, "base", copy.deepcopy(nets[0]).to("meta"))

    def _masks(self, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        masks = present[None] & self.subsets[:, None]  # [K, B, M]
        valid = masks.any(dim=-1)
        return torch.where(valid[..., None], masks, torch.ones_like(masks)), valid  # placeholder rows: all present

    def _call(self, net: nn.Module, prefix: str, probs: torch.Tensor, present: torch.Tensor):
        masks, valid = self._masks(present)
        params = {f"{prefix}{name}": param for name, param in zip(self.names, self.params)}
        return vmap(lambda p, m: functional_call(net, p, (probs, m, False)))(params, masks), valid

    def forward(self, probs: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(self.base, MultiHeadProbabilityFusion):
            return self._call(self.base, "", probs, present)
        # static weights depend on the presence pattern only: compute them once per pattern in the batch (a few),
        # not per segment, then P[k, b] = sum_m weights[k, pattern(b), m] * p_m[b] as in mhpf_combine
        patterns, inverse = torch.unique(present, dim=0, return_inverse=True)
        weights, valid = self.effective_weights(probs.new_zeros(len(patterns), *probs.shape[1:]), patterns)
        known = torch.where(present[:, :, None], probs, torch.zeros((), dtype=probs.dtype, device=probs.device))
        return (weights[:, inverse] * known).sum(dim=2), valid[:, inverse]

    def effective_weights(self, probs: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([K, B, M, C] modality weights of every net, valid [K, B])."""
        return self._call(_Effective(self.base), "net.", probs, present)

    def state_of(self, k: int) -> list[torch.Tensor]:
        """Net k's parameters (copies), to keep its best epoch's values."""
        return [p[k].detach().clone() for p in self.params]

    @torch.no_grad()
    def load_state_of(self, k: int, state: Sequence[torch.Tensor]) -> None:
        for param, value in zip(self.params, state):
            param[k] = value


class _Effective(nn.Module):
    """A net's `effective_weights` as a forward, so torch.func.functional_call can run it."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, probs: torch.Tensor, present: torch.Tensor, check: bool = False) -> torch.Tensor:
        return self.net.effective_weights(probs, present, check)


def class_weights(labels: Sequence[int] | torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, n / (C_present * n_c), 0 for a class absent from `labels` (AFEW has no Other)."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=num_classes).double()
    seen = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[seen] = counts.sum() / (seen.sum() * counts[seen])
    return weights.float()
