"""Multi-Head Probability Fusion (MHPF): per-class, per-head weights over modalities, mixed by a head gate.

Each modality m gives a probability vector p_m over C basic-emotion classes. With weights W of shape
heads x modalities x classes and a gate g of shape heads (9th ABAW, zero-shot multimodal compound expressions):

    alpha[h, m, c] = softmax over m of W[h, m, c]          (separately for every head h and class c)
    q_h[c]         = sum_m alpha[h, m, c] * p_m[c]
    P[c]           = sum_h softmax(g)_h * q_h[c]

A modality missing for a segment is masked out of the softmax over m, so the weights of the present ones are
renormalised to sum to 1. Because alpha depends on c, P does not sum to 1 over the classes in general;
`fused_probabilities` renormalises it (a per-segment constant, so the argmax is unchanged), and so does the
`renormalised_nll` loss, while the authors' loss reads P as logits.

`MultiHeadProbabilityFusion` learns W and g directly; `InputDependentMHPF` predicts them per segment with a small MLP
on the concatenated modality probabilities. Both share `mhpf_combine`. `MhpfBank` trains one MHPF per modality subset
side by side (the modality ablation): net k sees only the modalities of subset k, the others masked as missing.

Two choices are named, each from one registry: the training loss (`MHPF_LOSSES`: `authors_ce`, the authors'
cross-entropy of P taken as logits, or `renormalised_nll`, the likelihood of P renormalised) and the initialisation of
W and g (`MHPF_INITS`: `authors`, their torch.rand draws, or `small_random`). The authors' code is ProbabilityFusion_v6
and WeightedCrossEntropyLoss of the 9th ABAW entry; the paper configuration uses both of theirs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class MhpfError(ValueError):
    """A wrong MHPF choice or setting: an unknown kind, loss or initialisation, an empty modality subset."""


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
        raise MhpfError(f"segments at batch rows {empty[:5]} have no modality present; expected at least one")
    alpha = torch.softmax(weights.masked_fill(~present[:, None, :, None], float("-inf")), dim=2)  # [B, H, M, C]
    return (torch.softmax(gate, dim=-1)[:, :, None, None] * alpha).sum(dim=1)


def mhpf_combine(
    probs: torch.Tensor, weights: torch.Tensor, gate: torch.Tensor, present: torch.Tensor | None = None,
    check: bool = True,
) -> torch.Tensor:
    """P of the docstring above. probs [B, M, C]; weights [H, M, C] or [B, H, M, C]; gate [H] or [B, H];
    present [B, M] bool (None: all present). Returns [B, C]."""
    if probs.dim() != 3:
        raise MhpfError(f"probs has shape {tuple(probs.shape)}; expected [batch, modalities, classes]")
    present = _all_present(probs) if present is None else present
    # a missing modality's probabilities may be NaN: zero them so 0 * NaN never reaches the sum
    known = torch.where(present[:, :, None], probs, torch.zeros((), dtype=probs.dtype, device=probs.device))
    return (modality_weights(weights, gate, present, check) * known).sum(dim=1)


def _all_present(probs: torch.Tensor) -> torch.Tensor:
    return torch.ones(probs.shape[:2], dtype=torch.bool, device=probs.device)


def fused_probabilities(fused: torch.Tensor) -> torch.Tensor:
    """MHPF's output renormalised to sum to 1 over the classes."""
    return fused / fused.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def authors_init(num_heads: int, num_modalities: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' draws (ProbabilityFusion_v6): W = torch.rand(heads, modalities, classes), then
    g = torch.rand(heads), both uniform on [0, 1) and in that order, so that torch.manual_seed(s) followed by building
    the module gives their numbers."""
    weights = torch.rand(num_heads, num_modalities, num_classes)
    return weights, torch.rand(num_heads)


SMALL_RANDOM_STD = 0.01


def small_random_init(num_heads: int, num_modalities: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """W = randn * 0.01 and g = 0: every modality starts at weight 1/M and every head at 1/H (the fusion starts as
    the plain mean of the modalities); the small noise breaks the symmetry between heads that all-zero W would keep."""
    return torch.randn(num_heads, num_modalities, num_classes) * SMALL_RANDOM_STD, torch.zeros(num_heads)


MHPF_INITS: dict[str, Callable[[int, int, int], tuple[torch.Tensor, torch.Tensor]]] = {
    "authors": authors_init,
    "small_random": small_random_init,
}


def _checked_init(init: str) -> Callable[[int, int, int], tuple[torch.Tensor, torch.Tensor]]:
    if init not in MHPF_INITS:
        raise MhpfError(f"MHPF init {init!r} (config key fusion.init); expected one of {sorted(MHPF_INITS)}")
    return MHPF_INITS[init]


class MultiHeadProbabilityFusion(nn.Module):
    """MHPF with learned W [heads, modalities, classes] and gate g [heads]; 3 heads as published. `init` names how
    W and g are drawn (`MHPF_INITS`); `small_random` by default, `authors` in the paper configuration."""

    def __init__(self, num_modalities: int, num_classes: int = 8, num_heads: int = 3, init: str = "small_random"):
        super().__init__()
        weights, gate = _checked_init(init)(num_heads, num_modalities, num_classes)
        self.weights = nn.Parameter(weights)
        self.gate = nn.Parameter(gate)

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

    The MLP also sees the presence mask, so "modality absent" and "modality says all zeros" differ. This variant is
    affectlab's, not the authors': it has no W or g to draw, so its layers keep nn.Linear's own initialisation whatever
    `init` names (the name is still checked, so that a misspelt fusion.init fails here too).
    """

    def __init__(self, num_modalities: int, num_classes: int = 8, num_heads: int = 3, hidden: int = 64,
                 init: str = "small_random"):
        super().__init__()
        _checked_init(init)
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


def create_mhpf(kind: str, num_modalities: int, num_classes: int = 8, num_heads: int = 3,
                init: str = "small_random") -> nn.Module:
    """`static` (learned W, g) or `input_dependent` (W, g from an MLP); `init` as in `MHPF_INITS` (static only)."""
    if kind not in MHPF_KINDS:
        raise MhpfError(f"MHPF kind {kind!r} (config key fusion.kind); expected one of {sorted(MHPF_KINDS)}")
    return MHPF_KINDS[kind](num_modalities, num_classes=num_classes, num_heads=num_heads, init=init)


def _weighted_mean_nll(
    log_probs: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None, valid: torch.Tensor | None
) -> torch.Tensor:
    """torch's class-weighted NLL with its default reduction, per net: sum_b w[y_b] * -log_probs[b, y_b] / sum_b
    w[y_b] over the valid rows; the nets of a bank ([K, B, C]) summed. A net without a valid row adds 0 (torch: 0/0)."""
    picked = -log_probs.gather(-1, target.expand(log_probs.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    if class_weights is None:
        class_weights = torch.ones(log_probs.shape[-1], dtype=log_probs.dtype, device=log_probs.device)
    weight = torch.gather(class_weights.expand(*log_probs.shape[:-2], -1), -1, target.expand(picked.shape))
    if valid is not None:
        weight = weight * valid.to(weight.dtype)
    return ((weight * picked).sum(-1) / weight.sum(-1).clamp_min(1e-12)).sum()


def authors_cross_entropy(
    fused: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """The authors' loss (WeightedCrossEntropyLoss: F.cross_entropy(P, y, weight=w)): P taken as logits, so per net
    sum_b w[y_b] * -log softmax(P_b)[y_b] / sum_b w[y_b] over the valid rows.

    fused [B, C] or [K, B, C] (a bank: each net's loss as if it were trained alone, then summed); class_weights [C]
    or [K, C]; valid [B] or [K, B]. What this optimises is softmax(P), not P: see `renormalised_nll` for what that
    costs.
    """
    return _weighted_mean_nll(torch.log_softmax(fused, dim=-1), target, class_weights, valid)


def renormalised_nll(
    fused: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Class-weighted NLL of the renormalised fused probabilities P / sum_c P[c] (shapes as `authors_cross_entropy`).

    Why choose it over the authors' loss: it is a proper likelihood of the probabilities MHPF outputs (and PPA
    reads), which theirs is not. Theirs is the likelihood of softmax(P), and P lies in [0, 1], so softmax(P) is nearly
    flat: with 8 classes even a P equal to the one-hot target gets softmax(P)[y] = e / (e + 7) = 0.280 and a loss of
    1.274, against 2.079 (log 8) for the uniform P: the loss cannot tell a sure right answer from a vague one by much.
    Its gradient in P is softmax(P) - onehot(y), where this one's is 1 / sum(P) - onehot(y) / P[y]: at the uniform
    P (where training starts) 8x larger in norm (7.48 vs 0.935). On the fixed input of tests/test_mhpf_authors.py
    (authors' init, seed 7) the losses are 1.892 (authors) and 1.159 (this one), and the gradient of W and g is 2.6x
    smaller in norm under the authors' loss (3.0e-2 vs 7.9e-2), the two differing by up to 0.017 per parameter.
    Adam rescales each parameter's step, so the smaller size matters less than the direction: on the synthetic task
    of tests/test_mhpf_authors.py both losses find the informative modality and match its accuracy alone.
    """
    return _weighted_mean_nll(torch.log(fused_probabilities(fused).clamp_min(1e-12)), target, class_weights, valid)


MHPF_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "authors_ce": authors_cross_entropy,
    "renormalised_nll": renormalised_nll,
}


def mhpf_loss(
    fused: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None,
    valid: torch.Tensor | None = None, kind: str = "renormalised_nll",
) -> torch.Tensor:
    """MHPF's training loss named by `kind` (`MHPF_LOSSES`; targets are class indices). The paper configuration uses
    `authors_ce`; the default stays `renormalised_nll`, the loss this function computed before the choice existed.

    fused [B, C], or [K, B, C] for K nets (a bank) whose losses are summed; class_weights [C] or [K, C]; valid [B]
    or [K, B] marks the rows that count (a bank net with none of its modalities present has nothing to learn there).
    """
    if kind not in MHPF_LOSSES:
        raise MhpfError(f"MHPF loss {kind!r} (config key fusion.loss); expected one of {sorted(MHPF_LOSSES)}")
    return MHPF_LOSSES[kind](fused, target, class_weights, valid)


class MhpfBank(nn.Module):
    """K MHPFs of one kind trained side by side, net k fusing only the modalities of `subsets[k]` (the others are
    masked as missing, so they get weight 0 and no gradient). Equivalent to K separate trainings on the same batches
    (the parameters are disjoint and Adam is per parameter), in one vectorised pass: the modality ablation cheaply.

    forward(probs [B, M, C], present [B, M]) -> (fused [K, B, C], valid [K, B]); valid is False where net k has
    none of its modalities for that segment (its output there is meaningless and must be ignored).
    """

    def __init__(self, kind: str, num_modalities: int, subsets: Sequence[Sequence[int]], num_classes: int = 8,
                 num_heads: int = 3, init: str = "small_random"):
        super().__init__()
        if not subsets or any(not subset for subset in subsets):
            raise MhpfError(f"subsets {list(subsets)}; expected non-empty lists of modality indices")
        mask = torch.zeros(len(subsets), num_modalities, dtype=torch.bool)
        for k, subset in enumerate(subsets):
            mask[k, list(subset)] = True
        self.register_buffer("subsets", mask)
        # the nets draw one after another from the global generator (net 0 first, W before g within a net) and each
        # holds W for all the modalities: after torch.manual_seed(s), net 0 has the numbers of a lone MHPF of all of
        # them, but a subset's net not those the authors' model of that subset draws (its W is [H, len(subset), C])
        nets = [create_mhpf(kind, num_modalities, num_classes, num_heads, init) for _ in subsets]
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
