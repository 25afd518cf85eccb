"""peer: LightlySSL's SimCLR, as its CIFAR-10 benchmark writes it, against our exemplar task
with InfoNCE on the same images, batch and precision. The peer runs in processes of its own,
one per C heap setting of the profile (`Sizes.peer_heaps`): "system", the defaults a plain
PyTorch script gets (the headline ratio), and "reuse", our train.heap=reuse (like for like)."""

from __future__ import annotations

from collections.abc import Callable

from .commands import INFONCE, PEER_LR_PER_128, command_text, loop_config, run_folder, task_argv
from .lightly_peer import PeerProcess, minor_page_faults
from .record import figures, portable, say
from .runner import Bench
from .stepper import LoopStepper
from .timing import alternate, warm_up

PREFIX = {"system": "peer", "reuse": "peer_reuse_heap"}  # the results' names of each heap


def faults_per_step(contenders: dict[str, Callable[[], int]], counters: dict) -> dict[str, int]:
    """Minor page faults during one more step of each contender (counted in the process that
    runs it): the cost of memory the step maps afresh."""
    faults = {}
    for name, step in contenders.items():
        before = counters[name]()
        step()
        faults[name] = counters[name]() - before
    return faults


def peer_throughput(bench: Bench, ours: LoopStepper, peers: dict[str, PeerProcess]) -> dict:
    """Full and bare steps of both, the peer's full step with each heap setting, ours
    compiled with --compile; alternating. Then each data pipeline alone, and page faults."""
    peer = peers["system"]
    contenders = {"ours_full": ours.full}
    contenders.update({f"{PREFIX[heap]}_full": process.full for heap, process in peers.items()})
    contenders.update(ours_bare=ours.bare, peer_bare=peer.bare)
    if bench.compile:
        contenders["ours_compiled_full"] = ours.compiled().full
    first = warm_up(contenders, bench.sizes.warmup, bench.device)
    steps, windows = bench.sizes.peer_window_steps, bench.sizes.windows
    rates = alternate(contenders, windows, steps, bench.device)
    data_only = {"ours_views": ours.views_only, "peer_loader": peer.loader_only}
    data_rates = alternate(data_only, windows, steps, bench.device)
    counters = {"ours_full": minor_page_faults}
    counters.update({f"{PREFIX[heap]}_full": p.minor_page_faults for heap, p in peers.items()})
    faults = faults_per_step({name: contenders[name] for name in counters}, counters)
    speed = {name: value["images_per_sec"] for name, value in rates.items()}
    ratios = {
        f"ratio_ours_over_{PREFIX[heap]}": round(
            speed["ours_full"] / speed[f"{PREFIX[heap]}_full"], 3
        )
        for heap in peers
    }
    ratios["bare_ratio_ours_over_peer"] = round(speed["ours_bare"] / speed["peer_bare"], 3)
    if bench.compile:
        ratios["compiled_ratio_ours_over_peer"] = round(
            speed["ours_compiled_full"] / speed["peer_full"], 3
        )
        ratios["compile_seconds"] = first["ours_compiled_full"]
    return {
        **{f"{name}_images_per_sec": value for name, value in speed.items()},
        **ratios,
        **{f"{name}_images_per_sec": value["images_per_sec"] for name, value in data_rates.items()},
        "minor_page_faults_per_step": faults,
        # The heap setting's memory cost: each peer process's peak (same model and batch).
        "peer_peak_rss_mb": {heap: process.peak_rss_mb() for heap, process in peers.items()},
        "first_step_seconds": first,
        "windows": {name: value["windows"] for name, value in {**rates, **data_rates}.items()},
    }


def peer_section(bench: Bench) -> dict:
    try:
        import lightly
    except ImportError:  # the other sections still run
        why = "LightlySSL is not installed: pip install -e '.[bench]' (gpu.py --prepare carries it)"
        say(f"  skipped: {why}")
        return {"skipped": why}
    data, batch = bench.data["cifar"], bench.sizes.peer_batch
    argv = [*task_argv(INFONCE, data, bench.sizes), *bench.extra]
    setup = (data, batch, bench.peer_workers, bench.device, bench.amp_dtype)
    with run_folder() as folder:
        cfg = loop_config(argv)
        ours = LoopStepper(cfg, folder)
        peers = {heap: PeerProcess(*setup, heap=heap) for heap in bench.sizes.peer_heaps}
        flops = {"ours": ours.flops_per_image(), "peer": peers["system"].flops_per_image()}
        result = peer_throughput(bench, ours, peers)
        for process in peers.values():
            process.close()
    out = {
        "what": "images/s of LightlySSL SimCLR (own transforms, torch DataLoader, torchvision "
        "CIFAR ResNet-18) against our exemplar task with InfoNCE (pre-activation ResNet-18, "
        "small stem), alternating timed windows; bare: fwd + bwd + step on one in-memory batch. "
        "The peer runs in processes of its own: with the C heap's defaults, as a plain script "
        "gets them (peer_*), and where the profile asks, with our train.heap=reuse setting "
        "(peer_reuse_heap_*)",
        "data": portable([data]),
        "ours_heap": cfg.train.heap,
        "batch": batch,
        "image_size": 32,
        "precision": bench.precision,
        "channels_last": True,
        "lightly": lightly.__version__,
        "peer_workers": bench.peer_workers,
        "peer_setup": "SimCLRTransform(input_size=32, gaussian_blur=0.0); torchvision resnet18 "
        "with conv1 3x3/1, no maxpool, fc=Identity; SimCLRProjectionHead(512, 512, 128); "
        f"NTXentLoss(temperature=0.5); SGD(lr={PEER_LR_PER_128 * batch / 128:g}, momentum=0.9, "
        "weight_decay=5e-4); one forward per view",
        "ours_command": command_text(argv),
        "train_flops_per_image": flops,
        **result,
    }
    shown = ("ratio_ours_over_peer", "ratio_ours_over_peer_reuse_heap", "bare_ratio_ours_over_peer")
    say(f"  [{bench.precision}] {figures(out, *shown, 'compiled_ratio_ours_over_peer')}")
    say(f"  images/s: {figures(out, *(key for key in out if key.endswith('images_per_sec')))}")
    say(f"  {figures(out, 'peer_peak_rss_mb', 'minor_page_faults_per_step')}")
    return out
