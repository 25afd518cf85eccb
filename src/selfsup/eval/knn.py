"""Weighted k-nearest-neighbour classification on frozen features (the common SSL monitor).

Features are L2-normalised; each test sample's k most cosine-similar training samples vote for
their labels with weight exp(similarity / temperature) (Wu et al. 2018, "Unsupervised Feature
Learning via Non-Parametric Instance Discrimination"; k = 200, temperature 0.1 by default).

Runs on the device of the training features (a GPU's matrix products make the similarity
blocks cheap); the scores stay there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfsup.eval.settings import KnnSettings


@dataclass
class KnnResult:
    top1: float
    top5: float
    dims: int
    k: int
    temperature: float


def knn_votes(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    num_classes: int,
    settings: KnnSettings | None = None,
) -> torch.Tensor:
    """Class scores (N_test, num_classes): summed exp(sim / T) of each row's k neighbours.

    On the device of `train_x`.
    """
    settings = settings or KnnSettings()
    device = train_x.device
    train_x = F.normalize(train_x.float(), dim=1)
    train_y = train_y.to(device)
    k = min(settings.k, len(train_x))
    scores = torch.empty(len(test_x), num_classes, device=device)
    for start in range(0, len(test_x), settings.chunk):
        queries = F.normalize(test_x[start : start + settings.chunk].to(device).float(), dim=1)
        similarity, index = (queries @ train_x.T).topk(k, dim=1)  # (n, k)
        weights = (similarity / settings.temperature).exp()
        votes = torch.zeros(len(queries), num_classes, device=device)
        votes.scatter_add_(1, train_y[index], weights)
        scores[start : start + len(queries)] = votes
    return scores


def weighted_knn(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    settings: KnnSettings | None = None,
) -> KnnResult:
    """Top-1 / top-5 accuracy of weighted kNN on the test features."""
    from selfsup.eval.linear import accuracy

    settings = settings or KnnSettings()
    scores = knn_votes(train_x, train_y, test_x, num_classes, settings)
    test_y = test_y.to(scores.device)
    return KnnResult(
        top1=accuracy(scores, test_y),
        top5=accuracy(scores, test_y, 5),
        dims=train_x.shape[1],
        k=min(settings.k, len(train_x)),
        temperature=settings.temperature,
    )
