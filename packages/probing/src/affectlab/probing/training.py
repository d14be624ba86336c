"""Training every layer's probe to convergence, each layer keeping its own best weights by the validation split.

The paper's recipe (one epoch of Adam at 1e-4, `probes.fit_probes`) stops far from convergence: on all-MiniLM-L6-v2's
hidden states its MLP probe scored below a logistic regression on the same features. Here:

- the linear probe solves the L2-regularised multinomial logistic regression (mean cross-entropy + λ/2 ‖W‖², the
  bias not penalised: scikit-learn's ``LogisticRegression`` objective with λ = 1 / (C × N)) with full-batch L-BFGS,
  every layer at once (the layers' objectives share no parameter, so the summed objective has each layer's
  optimum as its own). Given several λ, each is solved in turn (strongest first, each warm-starting the next) and
  every layer keeps the λ whose solution scores best on the validation split; the path stops once
  `PATH_PATIENCE` weaker λ in a row improved no layer.
- the MLP probe trains with AdamW on mini-batches, is scored on the validation split after every epoch, and every
  layer keeps the weights of its best epoch; training stops once no layer has improved for ``patience`` epochs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from affectlab.probing.metrics import Progress, decisions, point_metrics
from affectlab.probing.probes import LayerProbes, layer_losses

MONITORS = ("loss", "accuracy", "f1_macro", "f1_weighted")
# λ tried for the linear probe when none is given, besides scikit-learn's default (C = 1, λ = 1/N)
WEIGHT_DECAYS = (10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
# the λ path stops once this many weaker λ in a row improved no layer: weaker ones cost the most evaluations
PATH_PATIENCE = 2


class ProbeTrainingError(ValueError):
    """Features, labels or options that cannot train probes; the message names the argument and what was expected."""


@dataclass
class ProbeTraining:
    """What `train_probes` did. An epoch is one pass over the training set: a mini-batch epoch for the MLP, one
    objective and gradient evaluation of the full batch for L-BFGS."""

    solver: str  # "lbfgs" (linear probe) or "adamw" (MLP)
    monitor: str  # the validation score that chose each layer's weights
    epochs_run: int
    best_epoch: list[int]  # per layer: the epoch (1-based) after which its kept weights were reached
    weight_decay: list[float]  # per layer: the L2 strength of its kept weights
    val_score: list[float]  # per layer: the monitored validation score of its kept weights (loss: its negative)
    history: list[list[float]]  # per epoch (MLP) or per weight decay tried (linear): every layer's validation score
    converged: bool  # L-BFGS reached its tolerance for every λ / the MLP stopped early (not at max_epochs)


def validation_scores(logits: torch.Tensor, labels: torch.Tensor, monitor: str) -> torch.Tensor:
    """``[L]``, higher is better: the negative loss, or accuracy / F1 of the probes' decisions."""
    if monitor == "loss":
        return -layer_losses(logits, labels).detach().cpu()
    predicted = decisions(logits.detach().cpu(), multi_label=labels.dim() == 2)
    return point_metrics(predicted, labels.cpu(), logits.shape[-1])[monitor].float()


def _check_inputs(probes: LayerProbes, features: torch.Tensor, labels: torch.Tensor, part: str) -> None:
    layers, classes = probes.w1.shape[0], probes.b2.shape[1] if probes.kind == "mlp" else probes.b1.shape[1]
    if features.dim() != 3 or features.shape[0] != layers or features.shape[2] != probes.mean.shape[2]:
        raise ProbeTrainingError(
            f"{part}_features of shape {tuple(features.shape)}: expected [{layers} layers, N, "
            f"{probes.mean.shape[2]} hidden] as the probes were built"
        )
    if labels.shape[0] != features.shape[1]:
        raise ProbeTrainingError(f"{part}_labels: {labels.shape[0]} labels for {features.shape[1]} feature rows")
    if labels.dim() == 2 and labels.shape[1] != classes:
        raise ProbeTrainingError(f"{part}_labels: multi-hot with {labels.shape[1]} columns, expected {classes}")
    if labels.dim() == 1 and (labels.min() < 0 or labels.max() >= classes):
        raise ProbeTrainingError(
            f"{part}_labels hold class {int(labels.min())}..{int(labels.max())}: expected 0..{classes - 1}"
        )


def train_probes(
    probes: LayerProbes,
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    max_epochs: int = 500,
    patience: int = 20,
    lr: float = 1e-3,
    weight_decay: float | Sequence[float] | None = None,
    batch_size: int = 64,
    monitor: str = "loss",
    seed: int = 0,
    progress: Progress | None = None,
) -> ProbeTraining:
    """Trains ``probes`` (standardised on the training features) until convergence; every layer ends with the
    weights that scored best on the validation split by ``monitor``.

    Features ``[L, N, hidden]``; labels class indices ``[N]`` or multi-hot ``[N, C]`` (sigmoid + binary
    cross-entropy). Linear probe: L-BFGS for at most ``max_epochs`` evaluations per λ in ``weight_decay`` (None: the
    grid `WEIGHT_DECAYS` plus scikit-learn's default 1/N); ``lr``, ``batch_size`` and ``patience`` are unused. MLP:
    AdamW (``lr``, decoupled ``weight_decay``, None: 0.01) on batches of ``batch_size`` shuffled with ``seed``.
    The features are standardised once, into a copy (memory: the training and validation features once more).
    ``progress(done, total, what)`` is called after every λ (linear) or epoch (MLP).
    """
    if monitor not in MONITORS:
        raise ProbeTrainingError(f"monitor={monitor!r}: expected one of {MONITORS}")
    if max_epochs < 1:
        raise ProbeTrainingError(f"max_epochs={max_epochs}: expected at least 1")
    device = probes.mean.device
    train_features, val_features = train_features.to(device), val_features.to(device)
    train_labels, val_labels = torch.as_tensor(train_labels).to(device), torch.as_tensor(val_labels).to(device)
    _check_inputs(probes, train_features, train_labels, "train")
    _check_inputs(probes, val_features, val_labels, "val")
    probes.fit_standardisation(train_features)
    with torch.no_grad():
        train_features, val_features = probes.standardise(train_features), probes.standardise(val_features)
    if probes.kind == "linear":
        if weight_decay is None:
            weight_decay = sorted({*WEIGHT_DECAYS, 1.0 / train_features.shape[1]}, reverse=True)
        decays = [float(weight_decay)] if isinstance(weight_decay, (int, float)) else list(weight_decay)
        if not decays or min(decays) < 0:
            raise ProbeTrainingError(f"weight_decay={weight_decay}: expected λ ≥ 0 (a number or a non-empty list)")
        result = _train_linear(probes, train_features, train_labels, val_features, val_labels, decays,
                               max_epochs, monitor, progress)
    else:
        if weight_decay is not None and not isinstance(weight_decay, (int, float)):
            raise ProbeTrainingError(f"weight_decay={weight_decay}: the MLP probe takes one AdamW weight decay")
        result = _train_mlp(probes, train_features, train_labels, val_features, val_labels, max_epochs=max_epochs,
                            patience=patience, lr=lr, weight_decay=0.01 if weight_decay is None else weight_decay,
                            batch_size=batch_size, monitor=monitor, seed=seed, progress=progress)
    probes.eval()
    return result


def keep_improved(probes: LayerProbes, best: dict[str, torch.Tensor], best_score: torch.Tensor,
                  scores: torch.Tensor) -> torch.Tensor:
    """The layers whose validation ``scores`` beat ``best_score`` (a boolean mask ``[L]``, returned): their current
    weights are copied into ``best`` (parameter name -> its best values) and their scores into ``best_score``, in
    place."""
    improved = scores > best_score
    with torch.no_grad():
        for name, parameter in probes.named_parameters():
            mask = improved.to(parameter.device)
            best[name][mask] = parameter.detach()[mask]
    best_score.copy_(torch.where(improved, scores, best_score))
    return improved


def restore_best(probes: LayerProbes, best: dict[str, torch.Tensor]) -> None:
    """Every layer's probe takes its weights in ``best`` (those of its best epoch)."""
    with torch.no_grad():
        for name, parameter in probes.named_parameters():
            parameter.copy_(best[name])


def _train_linear(probes, train_x, train_y, val_x, val_y, decays, max_evaluations, monitor, progress) -> ProbeTraining:
    layers = probes.w1.shape[0]
    best = {name: p.detach().clone() for name, p in probes.named_parameters()}
    best_score = torch.full((layers,), -torch.inf)
    best_epoch, best_decay = [0] * layers, [decays[0]] * layers
    history, evaluations, converged, stale = [], 0, True, 0
    decays = sorted(decays, reverse=True)
    probes.train()
    for index, decay in enumerate(decays):  # strongest first: each solution starts the next
        optimizer = torch.optim.LBFGS(
            [probes.w1, probes.b1], lr=1.0, max_iter=max_evaluations, max_eval=max_evaluations, history_size=20,
            tolerance_grad=1e-5, tolerance_change=1e-9, line_search_fn="strong_wolfe",
        )

        def objective(optimizer=optimizer, decay=decay) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = layer_losses(probes.head(train_x), train_y).sum() + 0.5 * decay * probes.w1.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(objective)
        state = optimizer.state[probes.w1]
        evaluations += state["func_evals"]
        converged &= state["func_evals"] < max_evaluations
        with torch.no_grad():
            scores = validation_scores(probes.head(val_x), val_y, monitor)
        history.append(scores.tolist())
        improved = keep_improved(probes, best, best_score, scores)
        for layer in improved.nonzero().flatten().tolist():
            best_epoch[layer], best_decay[layer] = evaluations, decay
        if progress is not None:
            progress(index + 1, len(decays), f"linear probes, λ={decay:g}: {state['func_evals']} L-BFGS evaluations, "
                                             f"best val {monitor} {_describe(best_score, monitor)}")
        stale = 0 if improved.any() else stale + 1
        if stale >= PATH_PATIENCE:
            break
    restore_best(probes, best)
    return ProbeTraining("lbfgs", monitor, evaluations, best_epoch, best_decay, best_score.tolist(), history, converged)


def _train_mlp(probes, train_x, train_y, val_x, val_y, *, max_epochs, patience, lr, weight_decay, batch_size, monitor,
               seed, progress) -> ProbeTraining:
    layers = probes.w1.shape[0]
    optimizer = torch.optim.AdamW(probes.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    best = {name: p.detach().clone() for name, p in probes.named_parameters()}
    best_score = torch.full((layers,), -torch.inf)
    best_epoch = [0] * layers
    history = []
    count = train_x.shape[1]
    for epoch in range(1, max_epochs + 1):
        probes.train()
        for batch in torch.randperm(count, generator=generator).split(batch_size):
            batch = batch.to(train_x.device)
            loss = layer_losses(probes.head(train_x[:, batch]), train_y[batch]).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        probes.eval()
        with torch.no_grad():
            scores = validation_scores(probes.head(val_x), val_y, monitor)
        history.append(scores.tolist())
        improved = keep_improved(probes, best, best_score, scores)
        for layer in improved.nonzero().flatten().tolist():
            best_epoch[layer] = epoch
        if progress is not None:
            progress(epoch, max_epochs, f"MLP probes: best val {monitor} {_describe(best_score, monitor)}")
        if epoch - max(best_epoch) >= patience:  # no layer improved for `patience` epochs
            break
    restore_best(probes, best)
    return ProbeTraining("adamw", monitor, epoch, best_epoch, [float(weight_decay)] * layers, best_score.tolist(),
                         history, epoch < max_epochs)


def _describe(scores: torch.Tensor, monitor: str) -> str:
    values = -scores if monitor == "loss" else scores
    return f"{float(values.min()):.4f}..{float(values.max()):.4f} over layers"
