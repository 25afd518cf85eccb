"""Carrying per-frame maps along the optical flow, so evidence from one frame helps the next.

Motion evidence comes and goes: an object pauses, the flow breaks down under motion blur,
the camera's motion is misjudged for a frame. The object itself persists. A recursive filter
along the flow (forward in time, then backward, averaged) keeps a memory of where the object
was: each frame's map is a blend of the previous frame's result, moved along the flow, and
the frame's own evidence; a frame with no evidence just inherits the moved map.
"""

from __future__ import annotations

import numpy as np


class Warper:
    """Pull a map of a neighbouring frame onto this frame's pixels: the value at p is read
    at p + flow(p), where the flow goes from this frame to the neighbour."""

    def __init__(self, height: int, width: int):
        self.gy, self.gx = np.mgrid[0:height, 0:width].astype(np.float32)

    def __call__(self, values: np.ndarray, flow: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.remap(
            values,
            self.gx + flow[..., 0],
            self.gy + flow[..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )


def align_neighbours(
    maps: np.ndarray, forward: list, backward: list, window: int, warp: Warper
) -> np.ndarray:
    """Mean over `window` frames (odd) centred on each frame, the neighbours' maps carried
    onto the frame along the flow (chained frame by frame), so a moving object's evidence
    adds up on the object rather than smearing along its path. forward[t]: flow t -> t+1;
    backward[t]: flow t+1 -> t."""
    count = len(maps)
    half = window // 2
    out = []
    for t in range(count):
        total, n = maps[t].astype(np.float32), 1
        for direction, flows in ((1, forward), (-1, backward)):
            # Walk outwards: the map of frame t + direction * k, carried back step by step.
            for k in range(half, 0, -1):
                if not 0 <= t + direction * k < count:
                    continue
                carried = maps[t + direction * k]
                for step in range(k - 1, -1, -1):
                    here = t + direction * step
                    flow = flows[here] if direction > 0 else flows[here - 1]
                    carried = warp(carried, flow)
                total, n = total + carried, n + 1
        out.append(total / n)
    return np.stack(out)


def recursive_filter(
    maps: list, has_evidence: list, forward: list, backward: list, memory: float, warp: Warper
) -> list:
    """Forward and backward recursive filter along the flow, averaged. `memory` (0..1) is
    the weight of the carried map; frames without evidence take the carried map alone."""

    def step(carried, t):
        return memory * carried + (1 - memory) * maps[t] if has_evidence[t] else carried

    # Going forward, frame t looks back at t-1 through the flow t -> t-1 (backward[t-1]).
    ahead = [maps[0]]
    for t in range(1, len(maps)):
        ahead.append(step(warp(ahead[-1], backward[t - 1]), t))
    # Going backward, frame t looks at t+1 through the flow t -> t+1 (forward[t]); each
    # frame's result is final once both passes have been through it.
    behind = maps[-1]
    out = [None] * len(maps)
    out[-1] = (ahead[-1] + behind) / 2
    for t in range(len(maps) - 2, -1, -1):
        behind = step(warp(behind, forward[t]), t)
        out[t] = (ahead[t] + behind) / 2
        ahead[t] = None  # no longer needed
    return out
