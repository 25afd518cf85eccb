"""Transitive-invariance graph (cliques, edge types, files) and the triplet task."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.cli import main
from selfsup.data.patch_graph import GraphError, PatchSet, load_graph, load_patches
from selfsup.graph.build import (
    GraphConfig,
    build_graph,
    cliques_of_distinct_tracks,
    graph_stats,
    inter_pairs,
    intra_pairs,
    merge_pairs,
    transitive_pairs,
)
from selfsup.graph.mining import cluster_and_search, four_cliques, have_faiss
from selfsup.tasks.transitive import choose_negatives, negative_mask, ranking_loss
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


def test_ranking_loss_averages_over_the_valid_triplets_only():
    generator = torch.Generator().manual_seed(1)
    a, p = (torch.nn.functional.normalize(torch.randn(4, 8, generator=generator), dim=1)
            for _ in range(2))  # fmt: skip
    n = torch.nn.functional.normalize(torch.randn(4, 3, 8, generator=generator), dim=2)
    valid = torch.rand(4, 3, generator=generator) < 0.6
    kept = [ranking_loss(a[i : i + 1], p[i : i + 1], n[i : i + 1, k : k + 1], 0.5)
            for i, k in valid.nonzero().tolist()]  # fmt: skip
    assert float(ranking_loss(a, p, n, 0.5, valid)) == pytest.approx(float(sum(kept) / len(kept)))


def test_hard_mining_picks_the_most_similar_allowed_negatives():
    anchor = torch.tensor([[1.0, 0.0]])
    angles = torch.tensor([0.0, 0.1, 0.5, 1.0, 2.0, 3.0])
    pool = torch.stack([angles.cos(), angles.sin()], 1)
    allowed = torch.tensor([[False, True, True, True, True, True]])  # 0 is the anchor's track
    picked, valid = choose_negatives(anchor, pool, allowed, 4, 2, torch.rand(1, 6))
    assert picked[0, :2].tolist() == [1, 2]  # the two closest allowed
    assert set(picked[0, 2:].tolist()) <= {3, 4, 5} and len(set(picked[0].tolist())) == 4
    assert valid.all()
    # Two allowed items for four slots: both picked (the nearer one hard), the rest invalid.
    few = torch.tensor([[False, False, False, True, False, True]])
    picked, valid = choose_negatives(anchor, pool, few, 4, 2, torch.rand(1, 6))
    assert sorted(picked[valid].tolist()) == [3, 5] and picked[0, 0] == 3
    assert valid.sum() == 2


def test_negatives_are_never_connected_to_the_anchor():
    """The paper's rule: a negative is never connected to its anchor in the graph. Three
    pairs (anchors 0-2, positives 3-5); the graph also pairs anchor 0 with patch 4 (a
    clique-mate, say) and anchor 1 with patch 2 (a transitive partner)."""
    tracks = torch.tensor([10, 11, 12, 13, 14, 15])
    connected = torch.zeros(6, 6, dtype=torch.bool)
    for a, b in [(0, 3), (1, 4), (2, 5), (0, 4), (1, 2)]:
        connected[a, b] = connected[b, a] = True
    allowed = negative_mask(tracks, connected)
    assert allowed.tolist() == [
        [False, True, True, False, False, True],  # not itself, its positive 3, nor 4
        [True, False, False, True, False, True],  # not its positive 4, nor 2
        [True, False, False, True, True, False],  # not its positive 5, nor 1
    ]
    # Same-track patches stay out too, whoever they are paired with.
    same = negative_mask(torch.tensor([10, 11, 12, 13, 14, 10]), torch.zeros(6, 6, dtype=bool))
    assert not same[0, 5] and not same[2, 0] and same[1, 0]
    embeddings = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    for seed in range(20):  # whatever the embeddings rank first, only allowed ones are valid
        noise = torch.rand(3, 6, generator=torch.Generator().manual_seed(seed))
        picked, valid = choose_negatives(embeddings[:3], embeddings, allowed, 3, 2, noise)
        assert allowed.gather(1, picked)[valid].all()


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


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_neighbours_come_from_other_tracks(backend):
    """A patch's own track-mates (near duplicates) never fill its neighbour slots: the lists
    hold exactly the nearest patches of other tracks in its cluster. Tracks of 30 patches
    outnumber the first search (2 (k + 1) = 12), so the faiss path has to search again."""
    if backend == "faiss" and not have_faiss():
        pytest.skip("faiss is not installed")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 16)).astype(np.float32) * 3  # 12 tracks
    points = np.concatenate([c + 0.1 * rng.normal(size=(30, 16)).astype(np.float32)
                             for c in centres])  # fmt: skip
    track = np.repeat(np.arange(12), 30)
    plain = cluster_and_search(points, 3, 5, backend=backend)[1]
    assert (track[plain] == track[:, None]).mean() > 0.9  # without: nearly all track-mates
    assign, neighbours = cluster_and_search(points, 3, 5, backend=backend, groups=track)
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    for i in range(0, len(points), 11):
        members = np.flatnonzero((assign == assign[i]) & (track != track[i]))
        best = members[np.argsort(-(unit[members] @ unit[i]), kind="stable")[:5]]
        listed = neighbours[i][neighbours[i] >= 0]
        assert set(listed) == set(best), i
    assert (track[np.maximum(neighbours, 0)] != track[:, None])[neighbours >= 0].all()


def test_intra_pairs_link_the_first_patch_to_its_views_far_along_the_track():
    """The paper's A and A' after tracking: no pair of neighbouring frames."""
    track = np.repeat([0, 1, 2], [6, 4, 1])
    frame = np.r_[np.arange(6) * 5, np.arange(4) * 5 + 40, 7]  # patches every 5 frames
    shuffled = np.random.default_rng(0).permutation(len(track))  # any order in the file
    track, frame = track[shuffled], frame[shuffled]

    def spans(pairs):
        return sorted((int(frame[a]), int(frame[b])) for a, b in pairs)

    assert spans(intra_pairs(track, frame, "first", 15)) == [(0, 15), (0, 20), (0, 25), (40, 55)]
    assert spans(intra_pairs(track, frame, "all", 20)) == [(0, 20), (0, 25), (5, 25)]
    assert len(intra_pairs(track, frame, "all", 0)) == 15 + 6  # C(6, 2) + C(4, 2)
    pairs = intra_pairs(track, frame, "first", 15)
    assert (track[pairs[:, 0]] == track[pairs[:, 1]]).all()


def test_graph_stats_count_cliques_of_four_tracks_and_intra_gaps():
    """Three kinds of object far apart, four tracks of each, two near-duplicate patches per
    track (A and A'). Over every patch, the 7 neighbours of a patch are the other 7 of its
    kind: an 8-clique, C(8, 4) = 70 cliques a kind, of which 2^4 = 16 join four tracks. Over
    other tracks, just those 16 remain."""
    rng = np.random.default_rng(0)
    track = np.repeat(np.arange(12), 2)
    kinds = 10 * np.eye(16)[np.arange(12) // 4]  # (12, 16): the kind of every track
    objects = kinds + rng.normal(size=(12, 16))
    features = (objects[track] + 0.01 * rng.normal(size=(24, 16))).astype(np.float32)
    anywhere = four_cliques(cluster_and_search(features, 1, 7, backend="torch")[1])
    assert len(anywhere) == 3 * 70 and cliques_of_distinct_tracks(anywhere, track) == 3 * 16
    frames = np.tile([0, 15], 12)
    patch_set = PatchSet(np.zeros((24, 8, 8, 3), np.uint8), track, frames,
                         np.zeros(24, np.int64), Path("patches.npz"))  # fmt: skip
    graph = build_graph(patch_set, features, GraphConfig(clusters=1, neighbours=7, backend="torch"))
    stats = graph_stats(graph)
    assert stats["cliques"] == stats["cliques_of_four_tracks"] == 3 * 16
    assert stats["intra_pairs"] == 12  # A and A' of every track
    assert stats["intra_frame_gap"] == {"min": 15, "median": 15.0, "mean": 15.0, "max": 15}


# --- files, commands and training ------------------------------------------------------------


def tiny_patches(path, tracks=12, per_track=4, size=16, seed=0):
    """Patches of `tracks` objects of three kinds (a base colour each), `per_track` along each
    track, 5 frames apart, with noise. Along its track an object brightens (its view changes),
    so a patch's nearest patches of other tracks are those of its kind at the same point of
    their tracks: the four tracks of a kind make a 4-clique there."""
    rng = np.random.default_rng(seed)
    kinds = np.array([[150, 40, 40], [40, 150, 40], [40, 40, 150]])
    images, track, frame = [], [], []
    for t in range(tracks):
        for f in range(per_track):
            noise = rng.integers(-20, 20, (size, size, 3))
            images.append(np.clip(kinds[t % 3] + 25 * f + noise, 0, 255).astype(np.uint8))
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
    assert stats["intra_pairs"] == 12  # each track's first patch with its view 15 frames on
    assert stats["intra_frame_gap"]["min"] == 15
    assert stats["cliques_of_four_tracks"] == stats["cliques"]
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
