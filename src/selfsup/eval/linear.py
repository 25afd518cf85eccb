"""Linear probes on frozen features: one multinomial logistic regression per layer.

Features are standardised with the training set's mean and std, then an L2-regularised
multinomial logistic regression is fitted to convergence with full-batch L-BFGS (as in CLIP's
linear-probe protocol): there is no learning rate or epoch count to tune, only the L2 strength.
That strength is chosen per layer on a validation split carved from the training features
(never on the test set); the classifier is then refitted on all training features with it, and
top-1 / top-5 accuracy on the test set is reported.

Cost. One L-BFGS iteration reads the whole (N, D) feature matrix twice, so on a CPU a probe's
time is the number of iterations times the matrix size. Three things keep it small without
changing the answer: the L2 selection fits a subsample of the training rows (at most
`selection_rows`) with the same prior strength (see `select_weight_decay`); the final fit
warm-starts from the selected subsample solution; and every fit stops once its loss improves
by less than `tolerance` (relative) over `check_every` iterations, where the test accuracy has
long stopped moving (the tests compare against fits run to the iteration cap).

Device. Every fit runs where the features are: on a GPU the features never go back to the
host, and the only host syncs are L-BFGS's own convergence checks (a few per iteration).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from selfsup.eval.settings import ProbeSettings


@dataclass
class ProbeResult:
    top1: float
    top5: float
    train_top1: float
    dims: int
    steps: int
    weight_decay: float = 0.0
    val_top1: dict[str, float] = field(default_factory=dict)  # per tried weight decay


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Scale every feature to zero mean, unit variance using the training rows' statistics."""
    train = train.float()
    mean, std = train.mean(dim=0), train.std(dim=0).clamp_min(1e-6)
    return [(train - mean) / std] + [(x.float() - mean) / std for x in others]


def accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Fraction of rows whose label is among the k largest logits."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return (top == labels[:, None]).any(dim=1).float().mean().item()


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    weight_decay: float,
    steps: int,
    start: torch.nn.Linear | None = None,
    tolerance: float = 0.0,
    check_every: int = 0,
) -> tuple[torch.nn.Linear, int]:
    """L2-regularised multinomial logistic regression on standardised (N, D) features.

    Returns the classifier and the L-BFGS iterations used. `start` warm-starts the fit. With
    `check_every` and `tolerance` both > 0 the fit also stops once `check_every` iterations
    lower the loss by less than `tolerance` of its value (L-BFGS's own tolerances are absolute
    and far tighter than a probe's accuracy needs).
    """
    classifier = torch.nn.Linear(x.shape[1], num_classes, device=x.device)
    with torch.no_grad():
        if start is None:  # the problem is convex: start from zero, deterministically
            classifier.weight.zero_()
            classifier.bias.zero_()
        else:
            classifier.load_state_dict(start.state_dict())
    chunk = check_every if check_every > 0 and tolerance > 0 else steps
    optimizer = torch.optim.LBFGS(
        classifier.parameters(),
        lr=1.0,
        max_iter=chunk,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(classifier(x), y)
        loss = loss + 0.5 * weight_decay * classifier.weight.pow(2).sum()
        loss.backward()
        return loss

    def iterations() -> int:
        return int(optimizer.state[classifier.weight].get("n_iter", 0))

    previous_loss = None
    while iterations() < steps:
        before = iterations()
        group = optimizer.param_groups[0]
        group["max_iter"] = min(chunk, steps - before)
        # Line searches may take several evaluations per iteration: the default budget
        # (1.25 per iteration) would end a short chunk early.
        group["max_eval"] = 4 * group["max_iter"]
        loss = float(optimizer.step(closure).detach())  # the loss where this chunk started
        if iterations() == before:
            break  # L-BFGS's own tolerances are met: nothing left to do
        if previous_loss is not None and previous_loss - loss < tolerance * abs(loss):
            break
        previous_loss = loss
    return classifier, iterations()


def validation_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (seeded) train / validation row indices."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    count = max(1, round(fraction * len(labels)))
    return order[count:], order[:count]


def select_weight_decay(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, settings: ProbeSettings
) -> tuple[float, dict[str, float], torch.nn.Linear | None]:
    """The L2 strength with the best validation top-1 (ties: the stronger regularisation).

    Also returns the fit at that strength, a warm start for the final fit. The selection fits
    at most `settings.selection_rows` rows. The loss is a mean over rows, so the same prior
    (the same balance between the summed data term and |W|^2) on n of the N training rows is
    the weight decay scaled by N / n: each candidate is fitted that way and reported under its
    full-data value.
    """
    if len(settings.weight_decays) == 1:
        return settings.weight_decays[0], {}, None
    # Drawn on the CPU (the same rows on every device), then moved to the features.
    fit_rows, val_rows = validation_split(y, settings.val_fraction, settings.seed)
    y, fit_rows, val_rows = y.to(x.device), fit_rows.to(x.device), val_rows.to(x.device)
    if 0 < settings.selection_rows < len(fit_rows):
        fit_rows = fit_rows[: settings.selection_rows]  # already in random order
    fit_x, val_x = standardise(x[fit_rows], x[val_rows])
    prior_scale = len(y) / len(fit_rows)
    scores: dict[str, float] = {}
    fits: dict[float, torch.nn.Linear] = {}
    previous = None
    # Strongest regularisation first: each fit warm-starts the next, weaker one.
    for wd in sorted(settings.weight_decays, reverse=True):
        previous, _ = fit_logistic(
            fit_x,
            y[fit_rows],
            num_classes,
            wd * prior_scale,
            settings.steps,
            previous,
            settings.tolerance,
            settings.check_every,
        )
        fits[wd] = previous
        with torch.no_grad():
            scores[f"{wd:g}"] = accuracy(previous(val_x), y[val_rows])
    best = max(sorted(settings.weight_decays, reverse=True), key=lambda wd: scores[f"{wd:g}"])
    return best, scores, fits[best]


def train_linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    settings: ProbeSettings | None = None,
) -> ProbeResult:
    """Choose the L2 strength on validation, refit on all training rows, score on test.

    Runs on the device of `train_x` (the other tensors are moved there).
    """
    settings = settings or ProbeSettings()
    device = train_x.device
    train_y, test_x, test_y = train_y.to(device), test_x.to(device), test_y.to(device)
    weight_decay, val_scores, start = select_weight_decay(train_x, train_y, num_classes, settings)
    train_x, test_x = standardise(train_x, test_x)
    classifier, steps = fit_logistic(
        train_x,
        train_y,
        num_classes,
        weight_decay,
        settings.steps,
        start,
        settings.tolerance,
        settings.check_every,
    )
    with torch.no_grad():
        test_logits = classifier(test_x)
        train_logits = classifier(train_x[:10_000])
    return ProbeResult(
        top1=accuracy(test_logits, test_y),
        top5=accuracy(test_logits, test_y, 5),
        train_top1=accuracy(train_logits, train_y[:10_000]),
        dims=train_x.shape[1],
        steps=steps,
        weight_decay=weight_decay,
        val_top1=val_scores,
    )
