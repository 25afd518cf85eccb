"""Video benchmark: motion-mask J on the DAVIS 2016 clips (beside the centre-box baseline),
tracking against DAVIS boxes, and throughput of masks, tracking and the patch pipeline at
240 px (shorter side), with 1 and 2 worker processes.

    python bench/video.py

Data comes from `$SELFSUP_DATA` (default: `../shared/data` beside the repository). Results go
to `bench/results/video.json` with the commands and the machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RESULTS, WORK, data_dir, machine, portable, run, scrub


def main() -> None:
    davis = data_dir() / "video" / "davis2016"
    frames, truth = davis / "JPEGImages" / "480p", davis / "Annotations" / "480p"
    vtest = data_dir() / "video" / "opencv_vtest" / "vtest_first200_384x288.npz"
    selfsup = [sys.executable, "-m", "selfsup", "video"]
    out = WORK / "video"
    commands = {
        "masks": [*selfsup, "masks", str(frames), "--eval", str(truth), "--out",
                  str(out / "masks"), "--quiet"],
        "track": [*selfsup, "track", str(frames), "--eval", str(truth), "--out",
                  str(out / "track"), "--quiet"],
        # Pedestrians at 10 fps move ~1 px per frame at 240 px: a static camera needs a
        # lower residual floor than DAVIS's moving cameras.
        "patches_1_worker": [*selfsup, "patches", str(frames), str(vtest), "--out",
                             str(out / "patches1"), "--workers", "1", "--quiet",
                             "masks.min_residual=1"],
        "patches_2_workers": [*selfsup, "patches", str(frames), str(vtest), "--out",
                              str(out / "patches2"), "--workers", "2", "--quiet",
                              "masks.min_residual=1"],
    }  # fmt: skip
    seconds = {name: round(run(command), 1) for name, command in commands.items()}
    masks = json.loads((out / "masks" / "scores.json").read_text())
    tracking = json.loads((out / "track" / "tracking.json").read_text())
    patches = json.loads((out / "patches2" / "summary.json").read_text())
    total_frames = sum(v["frames"] for v in patches["videos"])
    result = {
        "resolution": "240 px shorter side",
        "motion_masks": {
            "per_video": {
                v["video"]: {"J": round(v["J"], 3), "J_centre_box": round(v["J_centre_box"], 3),
                             "frames_per_s": round(v["fps"], 1)}
                for v in masks["videos"]
            },
            "mean_J": round(masks["mean_J"], 3),
            "mean_J_centre_box": round(masks["mean_J_centre_box"], 3),
        },
        "tracking": {
            "mean_iou_seeded_by_truth": round(tracking["mean_iou_from_truth"], 3),
            "mean_survival_seeded_by_truth": round(tracking["mean_survival_from_truth"], 3),
            "per_video": {v["video"]: {"from_truth": v.get("from_truth"),
                                       "proposals": v["proposals"]}
                          for v in tracking["videos"]},
        },
        "patches": {
            "videos": len(patches["videos"]), "frames": total_frames,
            "patches": patches["patches"], "tracks": patches["tracks"],
            "frames_per_s_1_worker": round(total_frames / seconds["patches_1_worker"], 1),
            "frames_per_s_2_workers": round(total_frames / seconds["patches_2_workers"], 1),
        },
        "seconds": seconds,
        "commands": {name: portable(c) for name, c in commands.items()},
        "machine": machine(),
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "video.json").write_text(json.dumps(result, indent=2))
    scrub(RESULTS)
    print(json.dumps({k: result[k] for k in ("motion_masks", "patches")}, indent=2))


if __name__ == "__main__":
    main()
