"""Masks of whole moving objects (`method=object`, the default): motion finds the object,
appearance completes it, time carries it through frames where motion fails. Each shot of an
edited video is masked on its own (`shot_starts`).

0. **Flow** to both neighbouring frames: DIS at full `flow_size` resolution (`flow=auto`).
1. **Motion against the background.** The camera's motion is a homography fitted (RANSAC)
   to the flow in a band along the frame border (`camera_border`), where objects rarely are.
   Fitted to the whole frame instead, it follows a large object, or one the camera pans
   with, and only the object's limbs stay "moving" (a camel whose legs alone were masked).
   Where the band's flow splits into a near and a far layer (parallax of a travelling
   camera), each gets a homography (`background_layers`, background.py) and the residual is
   against the nearer.
   The residual |flow - camera flow| is taken against both neighbouring frames and the
   smaller kept, which drops the smear flow leaves on one side of an object. Each residual
   is weighed by how far the flow passes a forward-backward check (`flow_trust`): the
   flow of rippling water or flickering light rarely leads back to where it started; and,
   once thresholded, by how far the image there shows the flow at all (`structure`).
2. **A threshold from the frame, a floor from the clip.** Per frame, Otsu's threshold on
   the log residual separates the moving layer from the still one whatever its share of the
   frame (a robust spread over the frame is inflated by a large object). A floor keeps
   flow noise out: `min_residual` px, lowered for clips whose fastest motion (99th
   percentile of the residual) is slow, to `floor_fraction` of it, so a slowly walking
   animal is still seen; and lowered where the background is still, to NOISE_MULTIPLE
   times its noise (the residual in the border band), so that beside a fast object a slow
   one is seen too (walkers at a still camera). Never below half a pixel.
3. **Flow-aligned smoothing**: scores are averaged over `temporal_window` frames, each
   neighbour's score carried onto the frame along the flow.
4. **Appearance** (appearance.py): colour models of object and surroundings learnt within
   `appearance_band` px of the motion mask, weighed with the motion, then an edge-aware
   smoother (`smoothness`) so the mask follows the object's outline.
5. **Propagation** (propagate.py): a recursive filter along the flow, forward and
   backward, with weight `memory` on the carried map, fills frames where the flow broke
   down (no mask, or one over most of the border band, where the camera's motion was
   measured); the result is thresholded at 0.5 and cleaned like the residual method's.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from selfsup.video.appearance import complete_with_appearance
from selfsup.video.background import layered_residual
from selfsup.video.motion import (
    FlowEstimator,
    clean_mask,
    flow_method,
    residual_flow,
    squared_length,
    to_gray,
)
from selfsup.video.propagate import Warper, align_neighbours, recursive_filter
from selfsup.video.rules import RuleLog

# Bumped whenever the same settings start to give other masks, so masks cached by an earlier
# version are not reused: 2 weighs residuals by the flow's trust, 3 lowers the floor over a
# still background, 4 sets repeated frames and bars along the frame's edges aside and
# makes each shot's masks on its own, 5 weighs residuals by the image's structure.
REVISION = 5
# Forward-backward check of Sundaram, Brox and Keutzer 2010: following the flow and then the
# reverse flow should come back to the start, within RELATIVE_SLACK of the squared motion
# plus ABSOLUTE_SLACK px^2.
RELATIVE_SLACK, ABSOLUTE_SLACK = 0.01, 0.5
LEAST_TRUST = 0.5  # a residual where the check fails counts half: it may still be the object
PRIOR_SLOPE = 2.0  # motion prior = sigmoid(PRIOR_SLOPE * log score): 0.5 at the threshold,
#                    0.8 at twice it; gentle, so colour can overrule weak motion
FASTEST = 99  # percentile of the residual that measures a clip's fastest motion
LOWEST_FLOOR = 0.5  # px at flow_size: DIS's sub-pixel accuracy on a still, textured scene
NOISE_MULTIPLE = 4.0  # a floor this many times the background's noise keeps the noise out
NOISE = 90  # percentile of the border band's residual that measures the noise
MAX_BORDER_COVER = 0.5  # share of the border band a usable motion mask may cover
# A cut: colour histograms this far apart (Bhattacharyya; within the shared clips at most 0.30,
# even at every third frame, but 0.42 in the 7-Scenes frames; between clips at least 0.39)
# and under this share of pixels passing the forward-backward check (between clips at most
# 0.12; within them at least 0.33, but 0.06 at every second frame of motocross-jump).
CUT_COLOUR, CUT_CONSISTENT = 0.33, 0.2
# The structure (smaller eigenvalue of the structure tensor over 5 px blocks of the grey image,
# 0..255, 3 px Sobel) at which a residual counts half. The fine grain of asphalt measures ~4,
# the same road through a video codec ~0.7, a textured object hundreds.
STRUCTURE_HALF = 1.0


def border_points(height: int, width: int, border: float) -> np.ndarray:
    band = max(1, round(border * min(height, width)))
    mask = np.zeros((height, width), bool)
    mask[:band] = mask[-band:] = True
    mask[:, :band] = mask[:, -band:] = True
    return mask


def otsu_threshold(residual: np.ndarray) -> float:
    """Otsu's threshold of log(residual): the split into a still and a moving layer."""
    import cv2

    log = np.log(residual + 0.05)
    low, high = float(log.min()), float(log.max())
    if high - low < 1e-6:
        return float("inf")  # a uniform residual: no moving layer
    scaled = ((log - low) / (high - low) * 255).astype(np.uint8)
    level, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_OTSU)
    return float(np.exp(low + level / 255 * (high - low)) - 0.05)


def flows(gray: list, cfg) -> tuple[list, list]:
    """Flows to both neighbours: forward[t] t -> t+1, backward[t] t+1 -> t (lists of T-1).
    Propagation needs them to the end, so they are kept as float16: a 1000-frame clip's at
    240 px take 0.8 GB so, 1.6 GB as float32."""
    method = flow_method(cfg)

    def flow_list(pairs: list) -> list:
        flow_of = FlowEstimator(method)  # one per thread: an estimator keeps state
        return [flow_of(a, b).astype(np.float16) for a, b in pairs]

    # OpenCV releases the GIL, and DIS leaves cores idle between its parallel stages: the two
    # directions side by side take ~15 % less time than one after the other (2 cores).
    ahead = list(itertools.pairwise(gray))
    behind = [(b, a) for a, b in ahead]
    with ThreadPoolExecutor(2) as pool:
        forward, backward = pool.map(flow_list, (ahead, behind))
    return forward, backward


def clip_floor(forward_residuals: list, cfg, points: np.ndarray) -> float:
    """The residual floor of this clip: min_residual, or less for a slow clip or a still
    background. The clip's fastest motion is the median over its frames of each frame's
    99th percentile; the background's noise, of each frame's 90th percentile in the border
    band `points`, where the camera's motion was fitted. A floor set by the fastest object
    alone hides the slower ones: at a still camera, walkers move 1-2 px a frame at 240 px
    and the background's residual is under 0.1 px."""
    fastest = np.median([np.percentile(r, FASTEST) for r in forward_residuals])
    noise = np.median([np.percentile(r[points], NOISE) for r in forward_residuals])
    floor = min(cfg.floor_fraction * fastest, NOISE_MULTIPLE * noise)
    return float(np.clip(floor, LOWEST_FLOOR, cfg.min_residual))


def flow_trust(flow: np.ndarray, reverse: np.ndarray, warp: Warper) -> np.ndarray:
    """How far each pixel's flow can be trusted (LEAST_TRUST..1) by the forward-backward
    check: 1 where the reverse flow brings the pixel back, half-way at the slack, towards
    LEAST_TRUST beyond it. Rippling water, flickering light and flow broken by blur fail the
    check; a solid object's flow passes it, except where it is occluded."""
    flow = flow.astype(np.float32)
    back = warp(reverse.astype(np.float32), flow)  # the reverse flow where the pixel lands
    error = squared_length(flow + back)
    slack = RELATIVE_SLACK * (squared_length(flow) + squared_length(back)) + ABSOLUTE_SLACK
    return LEAST_TRUST + (1 - LEAST_TRUST) * slack / (slack + error)


def structure(gray: np.ndarray) -> np.ndarray:
    """How far the flow at each pixel is seen rather than guessed (0..1): the smaller
    eigenvalue of the image's structure tensor, e, as e / (e + STRUCTURE_HALF). Where the
    image is flat in some direction, flow along it is not observed, only carried in from
    the surroundings (the aperture problem), and a residual there is no evidence of
    motion: still water and the swan's dark reflection, sky, a road a codec has smoothed."""
    import cv2

    eigenvalue = np.maximum(cv2.cornerMinEigenVal(gray.astype(np.float32), 5, 3), 0)
    return eigenvalue / (eigenvalue + STRUCTURE_HALF)


def background_residual(flow: np.ndarray, cfg, points: np.ndarray) -> tuple[np.ndarray, int]:
    """The flow the background does not explain, (H, W) px, against one homography of the
    border band `points` (`background_layers=1`) or up to two, one per layer of depth; and
    how many layers were fitted."""
    if cfg.background_layers == 1:
        return residual_flow(flow, cfg, points), 1
    return layered_residual(flow, cfg.grid_step, cfg.ransac_threshold, points)


def motion_scores(
    forward: list, backward: list, cfg, points: np.ndarray, warp: Warper, log: RuleLog
) -> np.ndarray:
    """Per frame, the residual (weighed by the flow's trust) over the frame's threshold
    (> 1: moving), the smaller of the scores against the next and the previous frame."""
    fitted = [background_residual(f, cfg, points) for f in forward]  # t -> t+1
    ahead = [residual.astype(np.float16) for residual, _ in fitted]
    floor = clip_floor(ahead, cfg, points)
    count = len(forward) + 1
    scores = []
    for t in range(count):
        against = []
        if t < count - 1:  # the next frame: flow t -> t+1
            trust = flow_trust(forward[t], backward[t], warp)
            against.append(ahead[t].astype(np.float32) * trust)
        if t > 0:  # the previous frame: flow t -> t-1
            trust = flow_trust(backward[t - 1], forward[t - 1], warp)
            against.append(background_residual(backward[t - 1], cfg, points)[0] * trust)
        scores.append(np.minimum.reduce([r / max(floor, otsu_threshold(r)) for r in against]))
    log.add(
        "background_layers",
        sum(layers > 1 for _, layers in fitted),
        "the border band's flow split into two layers of depth (parallax: near things slide "
        "past faster than far ones), each with its homography: motion is measured against "
        "the nearer layer",
    )
    return np.stack(scores).astype(np.float32)


def colour_histogram(frame: np.ndarray) -> np.ndarray:
    import cv2

    histogram = cv2.calcHist([frame], [0, 1, 2], None, [8, 8, 8], [0, 256] * 3)
    return cv2.normalize(histogram, histogram).flatten()


def shot_starts(small: list, forward: list, backward: list, warp: Warper) -> list[int]:
    """The frames that begin a shot: the first, and each frame after a cut. Across a cut
    the flow is meaningless; the residuals against it, the floor measured over both shots
    and masks carried over it would all be wrong. A cut changes the colours (Bhattacharyya
    distance of 8x8x8 colour histograms over CUT_COLOUR) and leaves flow that fails the
    forward-backward check nearly everywhere (under CUT_CONSISTENT of the pixels pass it);
    fast motion in one shot does one or the other, not both."""
    import cv2

    starts = [0]
    colours = [colour_histogram(frame) for frame in small]
    for t in range(1, len(small)):
        change = cv2.compareHist(colours[t - 1], colours[t], cv2.HISTCMP_BHATTACHARYYA)
        if change <= CUT_COLOUR:
            continue
        trust = flow_trust(forward[t - 1], backward[t - 1], warp)
        if (trust >= (1 + LEAST_TRUST) / 2).mean() < CUT_CONSISTENT:  # error under the slack
            starts.append(t)
    return starts


def object_masks(frames: np.ndarray, cfg, log: RuleLog | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, h, w) bool masks at flow_size (see the module docstring),
    each shot of the clip on its own; what the clip-wide rules did goes into `log`."""
    from selfsup.video.reader import resize_frame

    log = log if log is not None else RuleLog()
    small = [resize_frame(f, cfg.flow_size) for f in frames]
    if len(small) < 2:  # a single frame: nothing can be seen to move
        return np.zeros((len(small), *small[0].shape[:2]), bool)
    gray = [to_gray(f) for f in small]
    forward, backward = flows(gray, cfg)
    warp = Warper(*small[0].shape[:2])
    bounds = [*shot_starts(small, forward, backward, warp), len(small)]
    if len(bounds) > 2:
        log.add(
            "shots",
            len(small) - bounds[1],
            f"cuts before frames {bounds[1:-1]} (colours changed and the flow failed its "
            "check): the frames after the first cut are masked shot by shot",
        )
    return np.concatenate([
        shot_masks(small[a:b], gray[a:b], forward[a : b - 1], backward[a : b - 1], cfg, warp,
                   log)
        for a, b in itertools.pairwise(bounds)
    ])  # fmt: skip


def shot_masks(
    small: list, gray: list, forward: list, backward: list, cfg, warp: Warper, log: RuleLog
) -> np.ndarray:
    """The masks of one shot's frames (and their grey images), from their flows to both
    neighbours."""
    if len(small) < 2:  # a one-frame shot: nothing can be seen to move
        return np.zeros((len(small), *small[0].shape[:2]), bool)
    border = border_points(*small[0].shape[:2], cfg.camera_border)
    scores = motion_scores(forward, backward, cfg, border, warp, log)
    scores *= np.stack([structure(g) for g in gray])
    if cfg.temporal_window > 1:
        scores = align_neighbours(scores, forward, backward, cfg.temporal_window, warp)

    probabilities, has_evidence = [], []
    nothing_moved = over_border = 0
    for frame, score in zip(small, scores):
        seed = clean_mask(score > 1.0, cfg)
        # A mask over most of the border, where the camera's motion was measured, means that
        # measurement failed (motion blur, a frame-filling object): no evidence here.
        covered = seed[border].mean()
        nothing_moved += not seed.any()
        over_border += covered > MAX_BORDER_COVER
        usable = seed.any() and covered <= MAX_BORDER_COVER
        has_evidence.append(usable)
        if not usable:
            probabilities.append(np.zeros(score.shape, np.float32))
            continue
        prior = 1 / (1 + np.maximum(score, 1e-3) ** -PRIOR_SLOPE)  # sigmoid(slope * log s)
        probabilities.append(
            complete_with_appearance(frame, prior, seed, cfg.appearance_band, cfg.smoothness)
        )
    log.add(
        "nothing_moved",
        nothing_moved,
        "no pixel's motion passed the threshold: the mask is carried along the flow from "
        "the neighbouring frames (empty if none has one)",
    )
    log.add(
        "camera_misjudged",
        over_border,
        f"the motion mask covered over {MAX_BORDER_COVER:.0%} of the border band, where the "
        "camera's motion is measured, so that measurement is taken to have failed: the mask "
        "is carried along the flow from the neighbouring frames (empty if none has one)",
    )
    if cfg.memory > 0:
        probabilities = recursive_filter(
            probabilities, has_evidence, forward, backward, cfg.memory, warp
        )
    return np.stack([clean_mask(p > 0.5, cfg) for p in probabilities])
