"""The one door for training data: graph pairs as a step-indexed stream, streams read in
step, and the loop opening what a task declares."""

import json
from itertools import islice

import numpy as np
import pytest
import torch

from selfsup.config import ConfigError, parse_overrides, resolve
from selfsup.data.pairs import PairStream, type_counts
from selfsup.data.patch_graph import EDGE_TYPES, GraphError, load_patches
from selfsup.data.streams import Streams, batch_items
from selfsup.tasks import task_config_class
from selfsup.train import train
from tests.test_graph import tiny_patches
from tests.test_train import crash_at_step


def write_graph(folder, pairs: np.ndarray, types: np.ndarray):
    """A graph file over tiny patches, as `selfsup graph build` would write one."""
    folder.mkdir(parents=True, exist_ok=True)
    patches = tiny_patches(folder / "patches.npz")
    graph = folder / "graph.npz"
    np.savez(
        graph,
        pairs=pairs,
        pair_type=types,
        cliques=np.zeros((0, 4), np.int64),
        clusters=np.zeros(48, np.int64),
        patches_fingerprint=np.asarray(load_patches(patches).fingerprint()),
        patch_count=np.asarray(48),
        patches_path=np.asarray(str(patches)),
    )
    return patches, graph


@pytest.fixture
def graph_files(tmp_path):
    """40 pairs between the 48 patches of 12 tracks: a third of each edge type."""
    every = np.array([(a, b) for a in range(48) for b in range(a + 1, 48)])
    pairs = every[np.random.default_rng(0).choice(len(every), 40, replace=False)]
    return write_graph(tmp_path, pairs, np.arange(40) % 3)


def pair_stream(graph_files, **kwargs) -> PairStream:
    patches, graph = graph_files
    return PairStream(patches, graph, **{"pairs_per_batch": 4, "seed": 1, **kwargs})


def graph_types(graph) -> dict[tuple[int, int], int]:
    """{(i, j) with i < j: type} of the pairs in a graph file."""
    with np.load(graph) as data:
        return {tuple(sorted(p)): int(t) for p, t in zip(data["pairs"].tolist(), data["pair_type"])}


def pair_ids(stream: PairStream, start: int, count: int) -> list[list[int]]:
    """Each step's pairs as sorted (anchor, positive) ids, with the step numbers checked."""
    out = []
    for expected, (step, fields) in zip(range(start, start + count), stream.batches(start)):
        assert step == expected
        patches, tracks = fields["patches"], fields["tracks"]
        assert patches.shape == (8, 3, 16, 16) and patches.dtype == torch.uint8
        assert torch.equal(tracks, stream.tracks[stream.patch_ids(step)])
        assert fields["connected"].shape == (8, 8) and fields["pair_types"].shape == (4,)
        ids = stream.patch_ids(step).view(2, -1).T  # (B, 2): anchor, positive
        out.append(sorted(map(sorted, ids.tolist())))
    return out


def test_the_pairs_of_a_step_are_fixed_by_the_seed_and_resume_exactly(graph_files):
    stream = pair_stream(graph_files)
    assert stream.counts == [2, 1, 1] and stream.steps_per_epoch == 13  # 13 intra pairs, 1 a step
    whole = pair_ids(stream, 0, 16)  # more than an epoch
    assert whole == pair_ids(pair_stream(graph_files), 0, 16)
    assert pair_ids(pair_stream(graph_files), 7, 5) == whole[7:12]  # a resumed run
    assert whole != pair_ids(pair_stream(graph_files, seed=2), 0, 16)


def test_every_pair_of_a_type_is_met_once_in_its_epoch(graph_files):
    stream = pair_stream(graph_files)
    for kind, order in stream.orders.items():
        first = sum(stream.counts[:kind])  # the batch's pairs are grouped by type
        met = [
            tuple(sorted(pair))
            for step in range(order.steps_per_epoch)
            for pair in stream.patch_ids(step)
            .view(2, -1)
            .T[first : first + order.batch_size]
            .tolist()
        ]
        assert sorted(met) == sorted(map(tuple, stream.by_type[kind].tolist())), kind


def test_either_end_of_a_pair_can_be_the_anchor(graph_files):
    stream = pair_stream(graph_files)
    given = {tuple(p) for pairs in stream.by_type for p in pairs.tolist()}
    anchors_first = [
        tuple(pair) in given
        for step in range(10)
        for pair in stream.patch_ids(step).view(2, -1).T.tolist()
    ]
    assert 0 < sum(anchors_first) < len(anchors_first)


def test_ranks_train_on_disjoint_pairs(graph_files):
    ranks = [pair_stream(graph_files, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].steps_per_epoch == 6  # 13 intra pairs, 1 per rank and step
    for step in range(6):
        a, b = (set(map(tuple, pair_ids(r, step, 1)[0])) for r in ranks)
        assert not a & b


def test_batch_counts_follow_the_shares():
    assert type_counts([1, 1, 1], 64) == [22, 21, 21]
    assert type_counts([2, 1, 1], 8) == [4, 2, 2]
    assert type_counts([0, 1, 0], 5) == [0, 5, 0]
    assert type_counts([1, 1, 0], 2) == [1, 1, 0]
    assert type_counts([0.1, 0.3, 0.6], 7) == [1, 2, 4]  # 0.7, 2.1, 4.2: the largest remainder
    assert all(sum(type_counts([3, 1, 2], b)) == b for b in range(1, 40))


def test_the_pair_mixture_is_realised_as_set(graph_files):
    """Every batch holds the shares' counts of pairs of each type, as the graph types them
    (transitive pairs no longer fill the batch in proportion to their number)."""
    types = graph_types(graph_files[1])
    stream = pair_stream(graph_files, shares=(2.0, 1.0, 1.0), pairs_per_batch=8)
    for step, fields in islice(stream.batches(0), 20):
        ids = stream.patch_ids(step).view(2, -1).T.tolist()
        kinds = [types[tuple(sorted(pair))] for pair in ids]
        assert sorted(kinds) == [0, 0, 0, 0, 1, 1, 2, 2]
        assert fields["pair_types"].tolist() == kinds


def test_edges_pick_one_pair_type_and_an_empty_type_is_named(graph_files, tmp_path):
    stream = pair_stream(graph_files, shares=(0.0, 1.0, 0.0))
    assert len(stream.by_type[1]) == 13 and stream.counts == [0, 4, 0]  # types dealt 0, 1, 2
    assert stream.pair_types.tolist() == [1, 1, 1, 1]
    patches, graph = write_graph(tmp_path / "only_inter", np.array([[0, 4]]), np.array([0]))
    with pytest.raises(GraphError, match="no intra pairs"):
        PairStream(patches, graph, shares=(0, 1, 0), pairs_per_batch=1)
    assert EDGE_TYPES.index("intra") == 1
    # The mix goes to the types there are, and says which are missing.
    lacking = PairStream(patches, graph, pairs_per_batch=1)
    assert lacking.counts == [1, 0, 0] and "no intra, transitive pairs" in lacking.describe()
    with pytest.raises(GraphError, match=r"1 inter pairs is fewer .*pair_shares"):
        PairStream(patches, graph, pairs_per_batch=2)


def test_connected_marks_exactly_the_graph_pairs_among_a_batch(graph_files):
    """What keeps a negative from being connected to its anchor: the graph's pairs among the
    batch's patches, of every type, whichever types the run trains on."""
    types = graph_types(graph_files[1])
    stream = pair_stream(graph_files, shares=(0.0, 1.0, 0.0), pairs_per_batch=6)
    seen = 0
    for step, fields in islice(stream.batches(0), 8):
        ids = stream.patch_ids(step).tolist()
        expected = [[tuple(sorted((a, b))) in types for b in ids] for a in ids]
        assert fields["connected"].tolist() == expected
        seen += sum(map(sum, expected))
    assert seen > 8 * 2 * 6  # more than each pair itself, both ways: also other types' pairs


class Numbers:
    """A stream of step numbers that skips the steps in `skipped` (all its images bad)."""

    def __init__(self, name: str, skipped: set[int], steps_per_epoch: int = 10):
        self.name, self.skipped, self.steps_per_epoch = name, skipped, steps_per_epoch
        self.closed = False

    def batches(self, start: int):
        try:
            step = start
            while True:
                if step not in self.skipped:
                    yield step, {f"{self.name}images": torch.full((2,), step)}
                step += 1
        finally:
            self.closed = True


def test_streams_are_read_in_step_and_a_skipped_step_is_skipped_by_all():
    first, second = Numbers("", {3}), Numbers("motion_", {5, 6})
    streams = Streams([first, second])
    batches = streams.batches(2)
    seen = [next(batches) for _ in range(4)]
    assert [step for step, _ in seen] == [2, 4, 7, 8]
    for step, fields in seen:
        assert set(fields) == {"images", "motion_images"}
        assert all(int(t[0]) == step for t in fields.values())
        assert batch_items(fields) == 4
    batches.close()
    assert first.closed and second.closed  # prefetch threads and workers stop with the loop


def test_a_transitive_run_reads_its_pairs_through_the_loop_and_resumes_exactly(
    graph_files, tmp_path
):
    patches, graph = graph_files
    common = [
        "task=transitive", f"transitive.graph={graph}", f"data.path={patches}",
        "backbone.name=alexnet_small", "data.workers=0", "data.image_size=16",
        "transitive.crop_size=16", "transitive.pairs_per_batch=4", "transitive.embedding_dim=8",
        "transitive.pair_shares=[1, 2, 1]", "train.log_every=1", "optim.warmup_steps=1",
        "checkpoint.every=3",
    ]  # fmt: skip

    def config(steps: int):
        return resolve(parse_overrides([*common, f"train.steps={steps}"]), task_config_class)

    whole = train(config(6), tmp_path / "whole", progress=False)
    crash_at_step(config(6), tmp_path / "parts", step=4)  # killed after the step-3 checkpoint
    resumed = train(config(6), tmp_path / "parts", progress=False)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key

    def records(run: str) -> list[dict]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def losses(run: str) -> list[float]:
        return [record["loss"] for record in records(run)]

    assert losses("parts") == losses("whole") and len(losses("whole")) == 6
    # The mix asked for is the mix trained on, and the log says so.
    for record in records("whole"):
        shares = [record[f"share_{name}"] for name in EDGE_TYPES]
        assert shares == [0.25, 0.5, 0.25]
    assert config(6).task_config.patches == str(patches)  # transitive.patches = data.path


def test_a_task_without_its_data_is_refused_when_the_loop_opens_its_inputs(tiny_npz, tmp_path):
    values = parse_overrides(
        [
            "task=multitask",
            f"data.path={tiny_npz}",
            "multitask.tasks=[rotation,motion-segmentation]",
            "data.batch_size=8",
        ]
    )
    with pytest.raises(ConfigError, match=r"multitask\.videos: the multitask task needs frames"):
        train(resolve(values, task_config_class), tmp_path / "run", progress=False)
