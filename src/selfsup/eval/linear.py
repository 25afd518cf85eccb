"""Linear probes on frozen features: one multinomial logistic regression per layer.

Features are standardised with the training set's mean and std, then a linear classifier is
trained with AdamW and a cosine schedule on mini-batches. Top-1 and top-5 accuracy on the test
set are reported per layer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass
class ProbeSettings:
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 5e-4
    batch_size: int = 512
    seed: int = 0
    steps: int | None = None  # bounds the run (smoke tests); overrides epochs when given


@dataclass
class ProbeResult:
    top1: float
    top5: float
    train_top1: float
    dims: int
    steps: int


def _standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    train = train.float()
    mean = train.mean(dim=0)
    std = train.std(dim=0).clamp_min(1e-6)
    return (train - mean) / std, (test.float() - mean) / std


def accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Fraction of rows whose label is among the k largest logits."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return (top == labels[:, None]).any(dim=1).float().mean().item()


def train_linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    settings: ProbeSettings | None = None,
) -> ProbeResult:
    """Fit a linear classifier on (N, D) features and score it on the test features."""
    settings = settings or ProbeSettings()
    train_x, test_x = _standardise(train_x, test_x)
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    classifier = torch.nn.Linear(train_x.shape[1], num_classes)
    optimizer = torch.optim.AdamW(
        classifier.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    batch = min(settings.batch_size, len(train_x))
    steps_per_epoch = math.ceil(len(train_x) / batch)
    total = settings.steps or settings.epochs * steps_per_epoch
    step = 0
    while step < total:
        order = torch.randperm(len(train_x), generator=generator)
        for start in range(0, len(order), batch):
            if step >= total:
                break
            rows = order[start : start + batch]
            for group in optimizer.param_groups:  # cosine decay to zero
                group["lr"] = settings.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(classifier(train_x[rows]), train_y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    with torch.no_grad():
        test_logits = classifier(test_x)
        train_logits = classifier(train_x[:10_000])
    return ProbeResult(
        top1=accuracy(test_logits, test_y),
        top5=accuracy(test_logits, test_y, 5),
        train_top1=accuracy(train_logits, train_y[:10_000]),
        dims=train_x.shape[1],
        steps=total,
    )


def result_rows(results: dict[str, ProbeResult]) -> list[dict]:
    return [{"layer": layer, **asdict(result)} for layer, result in results.items()]


def format_table(columns: dict[str, dict[str, ProbeResult]], metric: str = "top1") -> str:
    """Markdown table: one row per layer, one column per model (accuracy in %)."""
    names = list(columns)
    layers = list(dict.fromkeys(layer for col in columns.values() for layer in col))
    lines = ["| layer | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for layer in layers:
        cells = []
        for name in names:
            result = columns[name].get(layer)
            cells.append(f"{100 * getattr(result, metric):.1f}" if result else "")
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
