"""The method pages' figures: one schematic per method, drawn with matplotlib from a bundled
CIFAR-10 image."""

from __future__ import annotations

import io
from typing import Any

from .pages import ROOT


def sample_image(index: int = 812) -> Any:
    """One image of the bundled CIFAR-10 test sample, (32, 32, 3) uint8."""
    import numpy as np
    from PIL import Image

    with np.load(ROOT / "src" / "selfsup" / "assets" / "cifar10_sample_test.npz") as data:
        lo, hi = data["offsets"][index], data["offsets"][index + 1]
        blob = data["jpeg"][lo:hi].tobytes()
    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))


def upscale(image: Any, factor: int) -> Any:
    return image.repeat(factor, 0).repeat(factor, 1)


def gray(image: Any) -> Any:
    import numpy as np

    luma = image @ np.array([0.299, 0.587, 0.114])
    return np.repeat(luma[..., None], 3, axis=2).astype(np.uint8)


def figure(width: float, height: float, columns: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, columns, figsize=(width, height), dpi=100)
    for ax in axes:
        ax.set_axis_off()
    return fig, axes


def png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def fig_counting() -> bytes:
    x = sample_image()
    fig, axes = figure(9, 2.2, 6)
    axes[0].imshow(x, interpolation="nearest")
    axes[0].set_title("crop x (2s x 2s)")
    # D with the area kernel (one of the four the task draws): the mean of each 2x2 block.
    down = x.reshape(16, 2, 16, 2, 3).mean(axis=(1, 3)).round().astype(x.dtype)
    axes[1].imshow(down, interpolation="nearest")
    axes[1].set_title("D(x) (s x s)")
    for j, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        axes[2 + j].imshow(x[r * 16 : r * 16 + 16, c * 16 : c * 16 + 16], interpolation="nearest")
        axes[2 + j].set_title(f"T{j + 1}(x)")
    fig.suptitle("phi(D x) = phi(T1 x) + phi(T2 x) + phi(T3 x) + phi(T4 x)", y=0.02)
    return png(fig)


def fig_grid(shuffle: bool) -> bytes:
    import matplotlib.patches as mpatches
    import numpy as np

    x = upscale(sample_image(), 4)  # 128 px
    size, gap = 34, 8
    fig, axes = figure(8, 3.2, 2)
    axes[0].imshow(x)
    cells = []
    for r in range(3):
        for c in range(3):
            top, left = 3 + r * (size + gap), 3 + c * (size + gap)
            cells.append((top, left))
            color = "tab:blue" if (r, c) == (1, 1) else "white"
            axes[0].add_patch(
                mpatches.Rectangle((left, top), size, size, fill=False, color=color, lw=2)
            )
    if not shuffle:
        axes[0].set_title("3x3 grid with gaps (jitter not drawn)")
        numbers = [0, 1, 2, 3, None, 4, 5, 6, 7]
        for (top, left), k in zip(cells, numbers):
            if k is not None:
                axes[0].text(left + 3, top + 12, str(k), color="yellow", fontsize=11)
        top, left = cells[2]
        axes[0].add_patch(
            mpatches.Rectangle((left, top), size, size, fill=False, color="tab:orange", lw=3)
        )
        centre, neighbour = cells[4], cells[2]
        pair = np.concatenate(
            [
                x[centre[0] : centre[0] + size, centre[1] : centre[1] + size],
                np.full((size, 6, 3), 255, np.uint8),
                x[neighbour[0] : neighbour[0] + size, neighbour[1] : neighbour[1] + size],
            ],
            axis=1,
        )
        axes[1].imshow(pair)
        axes[1].set_title("input: (centre, neighbour)  ->  class k = 2")
    else:
        axes[0].set_title("3x3 tiles with gaps (jitter not drawn)")
        order = [7, 2, 4, 0, 8, 1, 6, 3, 5]  # an illustrative permutation
        tiles = [x[t : t + size, le : le + size] for t, le in cells]
        canvas = np.full((3 * size + 2 * 4, 3 * size + 2 * 4, 3), 255, np.uint8)
        step = size + 4
        for i, src in enumerate(order):
            r, c = divmod(i, 3)
            canvas[r * step : r * step + size, c * step : c * step + size] = tiles[src]
        axes[1].imshow(canvas)
        for i, src in enumerate(order):
            r, c = divmod(i, 3)
            axes[1].text(c * (size + 4) + 3, r * (size + 4) + 12, str(src), color="yellow")
        axes[1].set_title("shuffled by permutation P_y  ->  class y")
    return png(fig)


def fig_colorization() -> bytes:
    import torch

    from selfsup.data import views as V
    from selfsup.tasks.colorization import ab_bins

    x = upscale(sample_image(), 2)
    bins = ab_bins()
    lab = torch.cat([torch.full((len(bins), 1), 60.0), bins], dim=1)
    colours = V.lab_to_rgb(lab.T[None, :, :, None])[0, :, :, 0].T.clamp(0, 1).numpy()
    fig, axes = figure(10.5, 2.8, 3)
    axes[0].imshow(gray(x))
    axes[0].set_title("input: lightness L")
    axes[1].set_axis_on()
    axes[1].scatter(bins[:, 0], bins[:, 1], c=colours, marker="s", s=18)
    axes[1].set_xlabel("a")
    axes[1].set_ylabel("b")
    axes[1].set_title(f"{len(bins)} in-gamut ab bins (grid 10)")
    axes[1].set_aspect("equal")
    axes[2].imshow(x)
    axes[2].set_title("target: ab of each pixel (soft bins)")
    return png(fig)


def fig_exemplar() -> bytes:
    import numpy as np

    x = upscale(sample_image(), 2)
    other, third = upscale(sample_image(300), 2), upscale(sample_image(650), 2)
    view1 = x[8:56, 4:52]
    view2 = np.clip(x[:, ::-1][16:64, 10:58] * 1.3, 0, 255).astype(np.uint8)
    fig, axes = figure(8, 2.4, 4)
    for ax, im, title in zip(
        axes,
        [view1, view2, gray(other[8:56, 8:56]), third[0:48, 16:64]],
        ["anchor (view 1)", "positive (view 2)", "negative", "negative"],
    ):
        ax.imshow(im)
        ax.set_title(title)
    fig.suptitle("d(anchor, positive) + M < d(anchor, negative), d = 1 - cos", y=0.02)
    return png(fig)


def fig_motion() -> bytes:
    import numpy as np

    background = upscale(sample_image(300), 2)
    obj = upscale(sample_image(), 1)[4:28, 4:28]
    frames, masks = [], []
    for t in range(3):
        frame = np.roll(background, t, axis=1).copy()  # the camera pans slowly
        mask = np.zeros(frame.shape[:2], np.uint8)
        top, left = 20, 6 + 12 * t  # the object moves faster than the camera
        frame[top : top + 24, left : left + 24] = obj
        mask[top : top + 24, left : left + 24] = 255
        frames.append(frame)
        masks.append(mask)
    fig, axes = figure(9, 2.4, 4)
    for t in range(3):
        axes[t].imshow(frames[t])
        axes[t].set_title(f"frame t{t - 1:+d}" if t != 1 else "frame t")
    axes[3].imshow(masks[1], cmap="gray")
    axes[3].set_title("target: moving pixels of t")
    fig.suptitle("flow minus camera motion (homography), thresholded -> mask", y=0.02)
    return png(fig)


def fig_rotation() -> bytes:
    import numpy as np

    x = sample_image()
    fig, axes = figure(7, 2.0, 4)
    for k in range(4):
        axes[k].imshow(np.rot90(x, k), interpolation="nearest")
        axes[k].set_title(f"k = {k} ({90 * k} deg)")
    return png(fig)


def box(ax, xy: tuple[float, float], text: str, color: str, w: float = 1.6, h: float = 0.7):
    import matplotlib.patches as mpatches

    ax.add_patch(
        mpatches.FancyBboxPatch(xy, w, h, boxstyle="round,pad=0.05", fc=color, ec="black", lw=1)
    )
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=9)


def arrow(ax, start: tuple[float, float], end: tuple[float, float], style: str = "-") -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "ls": style, "lw": 1})


def fig_multitask() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 3.8), dpi=100)
    ax.set_xlim(0, 12.6)
    ax.set_ylim(-0.5, 5)
    ax.set_axis_off()
    box(ax, (0.1, 2.1), "image", "#eeeeee", 1.0)
    arrow(ax, (1.15, 2.45), (1.5, 2.45))
    outputs = []
    for i in range(4):
        x = 1.5 + i * 1.35
        box(ax, (x, 2.1), f"unit {i + 1}", "#cfe2f3", 1.1)
        if i:
            arrow(ax, (x - 0.2, 2.45), (x, 2.45))
        outputs.append((x + 0.55, 2.1))
    ax.text(3.5, 1.2, "shared trunk: the residual units of one stage", ha="center", fontsize=9)
    tasks = ["relative position", "colorization", "exemplar", "motion seg."]
    for t, name in enumerate(tasks):
        y = 4.3 - t * 1.3
        box(ax, (7.4, y), r"BN-ReLU($\sum_u \alpha_{t,u}\,$unit$_u$)", "#fff2cc", 2.6, 0.6)
        box(ax, (10.6, y), name, "#d9ead3", 1.8, 0.6)
        for ox, oy in outputs:
            ax.plot([ox, 7.4], [oy + 0.7, y + 0.3], color="grey", lw=0.5, zorder=0)
        arrow(ax, (10.1, y + 0.3), (10.6, y + 0.3))
    ax.text(
        6.3,
        -0.4,
        r"$L = \sum_t w_t L_t + \lambda \|\alpha\|_1$: the L1 penalty makes each row of "
        r"$\alpha$ sparse",
        ha="center",
    )
    return png(fig)


def fig_transitive() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=100)
    ax.set_xlim(-0.5, 6.5)
    ax.set_ylim(-0.6, 3.2)
    ax.set_axis_off()
    nodes = {"A": (0.5, 2.5), "A'": (0.5, 0.3), "B": (5.5, 2.5), "B'": (5.5, 0.3)}
    for name, (x, y) in nodes.items():
        ax.add_patch(plt.Circle((x, y), 0.35, fc="#cfe2f3", ec="black"))
        ax.text(x, y, name, ha="center", va="center", fontsize=12)

    def edge(a: str, b: str, style: str, color: str, label: str) -> None:
        (x0, y0), (x1, y1) = nodes[a], nodes[b]
        ax.plot([x0, x1], [y0, y1], ls=style, color=color, lw=2, zorder=0)
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.12, label, ha="center", fontsize=9, color=color)

    edge("A", "B", "--", "tab:orange", "inter (4-clique)")
    edge("A", "A'", "-", "tab:blue", "")
    edge("B", "B'", "-", "tab:blue", "")
    ax.text(0.95, 1.4, "intra\n(track)", color="tab:blue", fontsize=9)
    ax.text(4.3, 1.4, "intra\n(track)", color="tab:blue", fontsize=9)
    edge("A", "B'", ":", "tab:green", "")
    edge("A'", "B", ":", "tab:green", "")
    edge("A'", "B'", ":", "tab:green", "transitive")
    return png(fig)


FIGURES = {
    "counting": fig_counting,
    "relative-position": lambda: fig_grid(shuffle=False),
    "jigsaw": lambda: fig_grid(shuffle=True),
    "colorization": fig_colorization,
    "exemplar": fig_exemplar,
    "motion-segmentation": fig_motion,
    "rotation": fig_rotation,
    "multitask": fig_multitask,
    "transitive": fig_transitive,
}


def figures() -> dict[str, bytes]:
    return {f"methods/img/{name}.png": draw() for name, draw in FIGURES.items()}
