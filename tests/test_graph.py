"""Transitive-invariance graph (cliques, edge types, files) and the triplet task."""

import json

import numpy as np
import pytest
import torch

from selfsup.cli import main
from selfsup.data.patch_graph import GraphError, PatchSet, load_graph, load_patches
from selfsup.graph.build import inter_pairs, merge_pairs, transitive_pairs
from selfsup.graph.mining import cluster_and_search, four_cliques, have_faiss
from selfsup.tasks.transitive import choose_negatives, ranking_loss
from tests.helpers import TINY

COMMON = [item for item in TINY if not item.startswith("counting.")]


def neighbour_lists(edges: dict[int, list[int]], n: int, k: int) -> np.ndarray:
    table = np.full((n, k), -1, np.int64)
    for node, listed in edges.items():
        table[node, : len(listed)] = listed
    return table


def test_four_cliques_of_a_hand_built_graph():
    edges = {
        # 0-3 all list each other: one 4-clique. 4 lists 0..3 but only 0 lists 4 back.
        0: [1, 2, 3, 4], 1: [0, 2, 3], 2: [0, 1, 3], 3: [0, 1, 2], 4: [0, 1, 2, 3],
        # 5-9 all list each other: a 5-clique holds C(5, 4) = 5 four-cliques.
        **{i: [j for j in range(5, 10) if j != i] for i in range(5, 10)},
        # 10-12 are a triangle (no fourth member): no clique.
        10: [11, 12], 11: [10, 12], 12: [10, 11],
    }  # fmt: skip
    cliques = four_cliques(neighbour_lists(edges, 13, 4))
    expected = [[0, 1, 2, 3], [5, 6, 7, 8], [5, 6, 7, 9], [5, 6, 8, 9], [5, 7, 8, 9],
                [6, 7, 8, 9]]  # fmt: skip
    assert cliques.tolist() == expected


def test_transitive_pairs_of_a_toy_graph():
    track = np.array([0, 0, 1, 1, 2])  # patches 0,1 one object; 2,3 another; 4 alone
    intra = np.array([[0, 1], [2, 3]])
    inter = inter_pairs(np.array([[0, 1, 2, 4]]), track)  # one clique over three tracks
    assert sorted(map(tuple, inter.tolist())) == [(0, 2), (0, 4), (1, 2), (1, 4), (2, 4)]
    transitive = transitive_pairs(np.array([[0, 2]]), intra, 5)
    assert sorted(map(tuple, transitive.tolist())) == [(0, 3), (1, 2), (1, 3)]
    pairs, types = merge_pairs([np.array([[0, 2]]), intra, np.array([[1, 3], [3, 1], [2, 0]])])
    assert pairs.tolist() == [[0, 2], [0, 1], [2, 3], [1, 3]]
    assert types.tolist() == [0, 1, 1, 2]  # (2, 0) is (0, 2): inter wins; (3, 1) deduplicated


def test_ranking_loss_matches_a_naive_reference():
    generator = torch.Generator().manual_seed(0)
    a, p = (torch.nn.functional.normalize(torch.randn(5, 8, generator=generator), dim=1)
            for _ in range(2))  # fmt: skip
    n = torch.nn.functional.normalize(torch.randn(5, 3, 8, generator=generator), dim=2)
    total = 0.0
    for i in range(5):
        for k in range(3):
            d_pos = 1 - float(a[i] @ p[i])
            d_neg = 1 - float(a[i] @ n[i, k])
            total += max(0.0, d_pos - d_neg + 0.5)
    assert float(ranking_loss(a, p, n, 0.5)) == pytest.approx(total / 15, rel=1e-5)


def test_hard_mining_picks_the_most_similar_allowed_negatives():
    anchor = torch.tensor([[1.0, 0.0]])
    angles = torch.tensor([0.0, 0.1, 0.5, 1.0, 2.0, 3.0])
    pool = torch.stack([angles.cos(), angles.sin()], 1)
    allowed = torch.tensor([[False, True, True, True, True, True]])  # 0 is the anchor's track
    picked = choose_negatives(anchor, pool, allowed, 4, 2, torch.rand(1, 6))
    assert picked[0, :2].tolist() == [1, 2]  # the two closest allowed
    assert set(picked[0, 2:].tolist()) <= {3, 4, 5} and len(set(picked[0].tolist())) == 4


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_neighbours_stay_in_their_cluster(backend):
    if backend == "faiss" and not have_faiss():
        pytest.skip("faiss is not installed")
    rng = np.random.default_rng(0)
    centres = np.eye(16, dtype=np.float32)[:4] * 10
    points = np.concatenate([c + rng.normal(size=(30, 16)).astype(np.float32) for c in centres])
    assign, neighbours = cluster_and_search(points, 4, 5, backend=backend)
    assert (neighbours >= 0).all()
    assert (assign[neighbours] == assign[:, None]).all()  # within the point's own cluster
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    for i in range(0, 120, 7):  # and exactly the nearest there (cosine), never oneself
        members = np.flatnonzero((assign == assign[i]) & (np.arange(120) != i))
        best = members[np.argsort(-(unit[members] @ unit[i]))[:5]]
        assert set(neighbours[i]) == set(best)


# --- files, commands and training ------------------------------------------------------------


def tiny_patches(path, tracks=12, per_track=4, size=16, seed=0):
    """Patches of `tracks` objects, each a colour blob seen `per_track` times with noise."""
    rng = np.random.default_rng(seed)
    images, track, frame = [], [], []
    for t in range(tracks):
        colour = rng.integers(0, 256, 3)
        for f in range(per_track):
            noise = rng.integers(-20, 20, (size, size, 3))
            images.append(np.clip(colour + noise, 0, 255).astype(np.uint8))
            track.append(t)
            frame.append(5 * f)
    np.savez(path, images=np.stack(images), track=np.array(track), frame=np.array(frame),
             video=np.array(track) // 4)  # fmt: skip
    return path


@pytest.fixture
def embed_run(tmp_path, tiny_npz):
    out = tmp_path / "embed"
    assert main(["train", "counting", "--data", str(tiny_npz), "--out", str(out), "--steps",
                 "1", "--quiet", *TINY]) == 0  # fmt: skip
    return out


def test_graph_build_stats_show_and_transitive_training(tmp_path, embed_run, capsys):
    patches = tiny_patches(tmp_path / "patches.npz")
    graph = tmp_path / "graph.npz"
    assert main(["graph", "build", "--patches", str(patches), "--embed", str(embed_run),
                 "--out", str(graph), "--quiet", "clusters=2", "neighbours=5",
                 "backend=torch"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["graph", "stats", str(graph), "--patches", str(patches)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["intra_pairs"] == 12 * 6  # C(4, 2) pairs in each of 12 tracks
    assert stats["params"]["neighbours"] == 5
    assert main(["graph", "show", str(graph), "--patches", str(patches), "--out",
                 str(tmp_path / "show")]) == 0  # fmt: skip
    run = tmp_path / "ti"
    args = ["train", "transitive", "--graph", str(graph), "--out", str(run), "--steps", "3",
            "--quiet", *COMMON, "data.image_size=16", "transitive.crop_size=16",
            "transitive.pairs_per_batch=8", "checkpoint.every=3"]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records and all(np.isfinite(r["loss"]) for r in records)
    for edges in ("intra",):  # the ablation runs through the same command
        assert main([*args[:5], str(tmp_path / edges), *args[6:],
                     f"transitive.edges={edges}"]) == 0  # fmt: skip


def test_a_graph_for_other_patches_is_refused(tmp_path, embed_run, capsys):
    patches = tiny_patches(tmp_path / "a.npz")
    other = load_patches(tiny_patches(tmp_path / "b.npz", seed=1))
    graph = tmp_path / "graph.npz"
    main(["graph", "build", "--patches", str(patches), "--embed", str(embed_run), "--out",
          str(graph), "--quiet", "clusters=2", "backend=torch"])  # fmt: skip
    with pytest.raises(GraphError, match="built for other patches"):
        load_graph(graph, other)
    assert isinstance(load_patches(patches), PatchSet)


def test_missing_patch_file_is_named(tmp_path):
    with pytest.raises(GraphError, match=r"nothing\.npz: no patch dataset"):
        load_patches(tmp_path / "nothing.npz")


def test_inspect_a_graph_shows_cliques_and_chains(tmp_path, embed_run):
    patches = tiny_patches(tmp_path / "patches.npz")
    graph = tmp_path / "graph.npz"
    assert main(["graph", "build", "--patches", str(patches), "--embed", str(embed_run),
                 "--out", str(graph), "--quiet", "clusters=2", "neighbours=5",
                 "backend=torch"]) == 0  # fmt: skip
    assert main(["inspect", str(graph), "--out", str(tmp_path / "page")]) == 0
    page = (tmp_path / "page" / "report.html").read_text()
    assert "cliques" in page and "intra_pairs" in page
    for name in ("cliques.jpg", "chains.jpg"):
        if name in page:
            assert (tmp_path / "page" / name).is_file()


def test_cluster_purity_ignores_unlabelled_patches():
    from selfsup.graph.build import cluster_purity

    assign = np.array([0, 0, 0, 1, 1, 1])
    labels = np.array([2, 2, 3, 5, -1, -1])  # -1: video patches without a class
    assert cluster_purity(assign, labels) == pytest.approx(3 / 4)
    assert np.isnan(cluster_purity(assign, np.full(6, -1)))
