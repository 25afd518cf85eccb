"""The documentation site: it builds strictly, and every code block in docs/ runs or parses.

Convention (docs/contributing.md): a `bash` or `python` fence is preceded by a marker line,
`<!-- test: run -->` (run here on tiny data) or `<!-- test: syntax REASON -->` (checked, not
run; REASON says what the test lacks). `yaml` fences are resolved as experiment configs;
`text` fences are not checked.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import ROOT, make_images
from tests.helpers import one_torch_thread  # noqa: F401 (autouse: tiny tensors, one thread)

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
LANGUAGES = {"bash", "python", "yaml", "text"}
REASONS = {"gpu", "data", "cluster", "long"}
MARK = re.compile(r"^<!-- test: (run|syntax (\w+)) -->$")
FENCE = re.compile(r"^(\s*)(`{3,})(.*)$")
# Programs a syntax-only shell block may call besides selfsup, torchrun, python and make.
OTHER_PROGRAMS = {"pip", "cd", "mkdir", "ls", "cat", "cp", "export", "nvidia-smi", "mkdocs",
                  "pytest", "ray"}  # fmt: skip


@dataclass
class Block:
    page: Path
    line: int
    language: str
    marker: str | None  # "run", "syntax <reason>", or None
    body: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, ticks, info = match.groups()
        language = info.strip().split(" ")[0] if info.strip() else ""
        end = i + 1
        while end < len(lines) and lines[end].strip() != ticks:
            end += 1
        body = "\n".join(line[len(indent) :] for line in lines[i + 1 : end])
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = MARK.match(previous)
        out.append(Block(page, i + 1, language, mark.group(1) if mark else None, body))
        i = end + 1
    return out


BLOCKS = [block for page in PAGES for block in blocks_of(page)]
CODE = [b for b in BLOCKS if b.language in ("bash", "python")]


def ids(block: Block) -> str:
    return block.where


# ---------------------------------------------------------------------------------------------
# The site
# ---------------------------------------------------------------------------------------------


def test_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: broken links and anchors, missing pages, pages outside the nav
    all fail. Built in-process (as `make docs` does in a shell) to reuse the imported torch."""
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs / mkdocs-material not installed (pip install -e '.[dev]')")
    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort

    site = tmp_path / "site"
    config = load_config(str(ROOT / "mkdocs.yml"), site_dir=str(site), strict=True)
    try:
        build(config)
    except Abort as err:  # the warnings that aborted it are in the captured log
        pytest.fail(f"mkdocs build --strict: {err}")
    for page in ("reference/cli", "reference/config", "results", "methods/counting"):
        assert (site / page / "index.html").is_file(), page
    counting = (site / "methods" / "counting" / "index.html").read_text()
    assert "<!-- results:" not in counting  # the hook filled the results block
    assert (site / "methods" / "img" / "counting.png").is_file()


# ---------------------------------------------------------------------------------------------
# Blocks: markers and syntax
# ---------------------------------------------------------------------------------------------


def test_every_fence_has_a_known_language_and_code_has_a_marker():
    problems = []
    for block in BLOCKS:
        if block.language not in LANGUAGES:
            known = ", ".join(sorted(LANGUAGES))
            problems.append(f"{block.where}: fence language {block.language!r}; use {known}")
        elif block.language in ("bash", "python"):
            if block.marker is None:
                problems.append(f"{block.where}: no <!-- test: run|syntax REASON --> marker")
            elif block.marker != "run" and block.marker.split()[1] not in REASONS:
                reason = block.marker.split()[1]
                problems.append(f"{block.where}: reason {reason!r} not in {sorted(REASONS)}")
    assert not problems, "\n".join(problems)
    assert any(b.marker == "run" for b in CODE)


def test_no_machine_paths_in_docs():
    pattern = re.compile(r"(/home/|/Users/|/root/|/work/|/tmp/|[A-Z]:\\)")
    hits = [
        f"{page.relative_to(ROOT)}: {match.group(0)}"
        for page in PAGES
        for match in pattern.finditer(page.read_text())
    ]
    assert not hits, hits


def known_keys() -> dict[str, set[str]]:
    """Section -> its dotted keys, for every config the docs may name."""
    from selfsup.config import ExperimentConfig, field_docs
    from selfsup.tasks import list_tasks, task_config_class
    from selfsup.video.patches import PatchConfig

    keys: dict[str, set[str]] = {}
    for key, *_ in field_docs(ExperimentConfig) + field_docs(PatchConfig):
        section, _, rest = key.partition(".")
        keys.setdefault(section, set()).add(rest)
    for task in list_tasks():
        keys[task] = {key for key, *_ in field_docs(task_config_class(task))}
    return keys


FILE_SUFFIXES = {"npz", "md", "py", "yaml", "json", "jpg", "png", "pt", "onnx", "safetensors"}


def test_config_keys_named_in_docs_exist():
    """`counting.margin`, `data.batch_size=64`, `multitask.settings.exemplar.loss` in prose,
    tables and commands must be real keys."""
    keys = known_keys()
    pattern = re.compile(r"(?<![\w./-])([a-z][a-z-]*)\.([a-z_][a-z_.]*)(?==|`|\s|$)")
    missing = []
    for page in PAGES:
        for match in pattern.finditer(page.read_text()):
            section, key = match.group(1), match.group(2).rstrip(".")
            if section not in keys or key in FILE_SUFFIXES:  # `train.npz` is a file
                continue
            if section == "multitask" and key.startswith("settings."):
                section, _, key = key.removeprefix("settings.").partition(".")
            if key not in keys.get(section, set()):
                missing.append(f"{page.relative_to(ROOT)}: {section}.{key}")
    assert not missing, missing


@pytest.mark.parametrize("block", [b for b in CODE if b.language == "python"], ids=ids)
def test_python_blocks_compile(block):
    compile(block.body, block.where, "exec")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.language == "yaml"], ids=ids)
def test_yaml_blocks_are_valid_configs(block):
    from selfsup.config import resolve
    from selfsup.tasks import task_config_class

    resolve(yaml.safe_load(block.body), task_config_class)


def commands(body: str) -> list[list[str]]:
    """The commands of a shell block: continuations joined, comments dropped, `&&` split."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        line = line.replace("$SLURM_ARRAY_TASK_ID", "0")  # a job array's task: 0 ... N - 1
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in words:
            if word in ("&&", ";", "||"):
                out.append(current)
                current = []
            else:
                current.append(word)
        out.append(current)
    return [[w for w in c if not re.fullmatch(r"[A-Z_]+=\S*", w)] or c for c in out if c]


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([\w-]+):", text, re.MULTILINE))


def check_selfsup(argv: list[str]) -> None:
    """Parse like `selfsup.cli.main` does, then validate key=value settings where known."""
    from selfsup.cli import build_parser

    parser = build_parser()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args, extra = parser.parse_known_args(argv)
    except SystemExit:
        pytest.fail(f"selfsup {shlex.join(argv)}: {stderr.getvalue().strip()}")
    stray = [a for a in extra if "=" not in a or a.startswith("-")]
    assert not stray, f"selfsup {shlex.join(argv)}: unrecognised {stray}"
    overrides = [*getattr(args, "overrides", []), *extra]
    assert not extra or hasattr(args, "overrides"), f"selfsup {shlex.join(argv)}: {extra}"
    check_settings(args, overrides)


def check_settings(args, overrides: list[str]) -> None:
    from selfsup.config import from_dict, load_yaml, merge, parse_overrides, resolve, validate
    from selfsup.tasks import task_config_class

    if args.command == "train":
        values: dict = {}
        if args.config and (ROOT / args.config).is_file():
            values = load_yaml(ROOT / args.config)
        values["task"] = args.task
        if args.graph:
            values = merge(values, {"transitive": {"graph": args.graph}})
        if args.tasks:
            values = merge(values, {"multitask": {"tasks": args.tasks.split(",")}})
        if args.videos:
            values = merge(values, {"multitask": {"videos": args.videos}})
        resolve(merge(values, parse_overrides(overrides)), task_config_class)
    elif args.command == "video":
        from selfsup.video.motion import MotionMaskConfig
        from selfsup.video.patches import PatchConfig

        cls = MotionMaskConfig if args.video_command == "masks" else PatchConfig
        validate(from_dict(cls, parse_overrides(overrides)))
    elif args.command == "graph" and args.graph_command == "build":
        from selfsup.graph.build import GraphConfig

        validate(from_dict(GraphConfig, parse_overrides(overrides)))


def check_command(words: list[str]) -> None:
    program, rest = words[0], words[1:]
    if program == "selfsup":
        check_selfsup(rest)
    elif program == "torchrun":
        from torch.distributed.run import get_args_parser

        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                args = get_args_parser().parse_args(rest)
        except SystemExit:
            pytest.fail(f"torchrun {shlex.join(rest)}: {stderr.getvalue().strip()}")
        assert args.module and args.training_script == "selfsup", shlex.join(words)
        check_selfsup(args.training_script_args)
    elif program == "python":
        if rest[:2] == ["-m", "selfsup"]:
            check_selfsup(rest[2:])
        else:
            assert (ROOT / rest[0]).is_file(), f"python {rest[0]}: no such file"
    elif program == "make":
        assert set(rest) <= make_targets(), f"make {rest}: targets are {sorted(make_targets())}"
    else:
        assert program in OTHER_PROGRAMS, f"{shlex.join(words)}: unexpected program {program}"


@pytest.mark.parametrize("block", [b for b in CODE if b.language == "bash"], ids=ids)
def test_shell_blocks_parse(block):
    done = subprocess.run(["bash", "-n"], input=block.body, capture_output=True, text=True)
    assert done.returncode == 0, f"{block.where}: {done.stderr}"
    for words in commands(block.body):
        check_command(words)


def test_cli_examples_parse():
    """The examples in `selfsup --help` and the subcommands' epilogs name real flags."""
    from selfsup.cli import EXAMPLES
    from selfsup.graph.cli import EXAMPLES as GRAPH
    from selfsup.video.cli import EXAMPLES as VIDEO

    for text in (EXAMPLES, GRAPH, VIDEO):
        body = "\n".join(line for line in text.splitlines()[1:])
        for words in commands(body):
            check_command(words)


# ---------------------------------------------------------------------------------------------
# Run blocks, on tiny data
# ---------------------------------------------------------------------------------------------

TINY_RUN = [
    "backbone.name=alexnet_small",
    "counting.num_counts=32",
    "counting.head_hidden=[32]",
    "data.batch_size=16",
    "data.workers=0",
    "train.log_every=1",
    "optim.warmup_steps=1",
]


def write_clip(folder: Path, frames: int = 8, size: int = 64) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (size, size + frames * 2, 3), dtype=np.uint8)
    for t in range(frames):
        frame = background[:, t : t + size].copy()  # the camera pans 1 px per frame
        top, left = 20, 4 + 5 * t  # a bright square moves 5 px per frame
        frame[top : top + 16, left : left + 16] = (240, 220, 40)
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The tiny data every run block may use (the table in docs/contributing.md)."""
    from PIL import Image

    from selfsup.cli import main

    root = tmp_path_factory.mktemp("docs_workspace")
    folder = root / "my_images"
    folder.mkdir()
    images, _ = make_images(24, size=40, seed=3)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"img{i:02d}.jpg")
    for name, count, seed in (("train", 64, 0), ("test", 32, 1)):
        images, labels = make_images(count, seed=seed)
        names = np.array(list("abcd"))
        np.savez(root / f"{name}.npz", images=images, labels=labels, class_names=names)
    write_clip(root / "my_clip")
    data, out = str(root / "train.npz"), str(root / "runs" / "count")
    argv = ["train", "counting", "--data", data, "--out", out]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main([*argv, "--steps", "3", "--quiet", *TINY_RUN]) == 0
    finally:
        torch.set_num_threads(threads)
    return root


def run_shell(block: Block) -> None:
    from selfsup.cli import main

    for words in commands(block.body):
        assert words[0] == "selfsup", f"{block.where}: run blocks hold selfsup commands only"
        output = io.StringIO()
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            code = main([*words[1:], "--quiet"] if takes_quiet(words) else words[1:])
        assert code == 0, f"{block.where}: {shlex.join(words)} exited {code}\n{output.getvalue()}"


def takes_quiet(words: list[str]) -> bool:
    """Progress bars only clutter the test log; add --quiet where the command has it."""
    from selfsup.cli import build_parser

    if "--quiet" in words:
        return False
    parser = build_parser()
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args, _ = parser.parse_known_args([*words[1:], "--quiet"])
    except SystemExit:
        return False
    return bool(getattr(args, "quiet", False))


RUN_PAGES = sorted({b.page for b in CODE if b.marker == "run"})


def one_native_thread():
    """OpenMP / BLAS pools of one thread (t-SNE in `selfsup inspect` crawls when its threads
    compete with other processes for the cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


@pytest.mark.parametrize("page", RUN_PAGES, ids=[str(p.relative_to(DOCS)) for p in RUN_PAGES])
def test_run_blocks_run(page, workspace, tmp_path, monkeypatch):
    folder = tmp_path / "work"
    shutil.copytree(workspace, folder)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    for block in blocks_of(page):
        if block.marker != "run" or block.language not in ("bash", "python"):
            continue
        with one_native_thread():
            if block.language == "bash":
                run_shell(block)
            else:
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(block.body, block.where, "exec"), {"__name__": "__main__"})


# ---------------------------------------------------------------------------------------------
# The generator: results pages from whatever JSON exists
# ---------------------------------------------------------------------------------------------


def gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "tools" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_pages_say_not_measured_without_results(tmp_path):
    pages = gen_docs().results_pages(tmp_path / "missing")
    assert "not measured yet" in pages["results/counting.md"].lower()
    assert "not measured yet" in pages["results/video.md"].lower()
    assert "not measured yet" in pages["results/graph.md"].lower()
    assert "not measured yet" in gen_docs().results_block("counting", {})


def test_results_pages_render_what_exists(tmp_path):
    results = tmp_path / "results"
    (results / "mt_rotation" / "linear").mkdir(parents=True)
    (results / "mt_rotation" / "linear" / "accuracy.png").write_bytes(b"\x89PNG fake")
    entry = {
        "entry": "mt_rotation",
        "steps": 10,
        "seconds": {"train": 1.5},
        "linear": {"run": {"layer1": 0.25, "final": 0.5}, "random:resnet18": {"final": 0.125}},
        "knn": {"run": {"final": 0.375}},
    }
    (results / "mt_rotation.json").write_text(__import__("json").dumps(entry))
    (results / "mystery.json").write_text('{"answer": 42}')
    (results / "broken.json").write_text("{not json")
    module = gen_docs()
    pages = module.results_pages(results)
    multitask = pages["results/multitask.md"]
    assert "| `run` | 25.0 | 50.0 |" in multitask
    assert "![mt_rotation: linear/accuracy.png](img/mt_rotation/linear/accuracy.png)" in multitask
    assert pages["results/img/mt_rotation/linear/accuracy.png"] == b"\x89PNG fake"
    assert "`answer` | 42" in pages["results/index.md"]  # unknown files are still shown
    assert "`broken`" in pages["results/index.md"]
    block = module.results_block("rotation", module.load_results(results))
    assert "50.0 (final)" in block and "12.5 (final)" in block


def test_video_page_shows_the_stress_sets(tmp_path):
    """The masks' stress sets reach the video page: mean J per set beside the earlier
    method and the centre box, the worst clip's margin over its centre box, and the still
    scene's share of empty frames."""
    import json

    results = tmp_path / "results"
    results.mkdir()
    clips = {"a": {"J": 0.5, "J_centre_box": 0.2}, "b": {"J": 0.3, "J_centre_box": 0.25}}
    still = {"clip": "kitchen", "frames": 200, "empty_frames": 0.935, "mean_area": 0.0018,
             "largest_area": 0.04, "frames_per_s": 17.9}  # fmt: skip
    video = {
        "motion_masks": {"per_video": clips, "mean_J": 0.4, "mean_J_centre_box": 0.225},
        "stress": {
            "fast": {"per_video": clips, "mean_J": 0.4, "mean_J_residual": 0.35,
                     "mean_J_centre_box": 0.225},
            "static_scene": {"object": still, "residual": {**still, "empty_frames": 0.665}},
        },
    }  # fmt: skip
    (results / "video.json").write_text(json.dumps(video))
    page = gen_docs().results_pages(results)["results/video.md"]
    assert "| every second frame (fast motion) | 0.4 | 0.35 | 0.225 | 0.05 |" in page
    assert "| object | 0.935 | 0.0018 | 0.04 | 17.9 |" in page
    assert "| residual | 0.665 |" in page and "`kitchen` (200 frames" in page


def test_hand_written_notes_end_their_results_page(tmp_path):
    results = tmp_path / "results"
    (results / "readings").mkdir(parents=True)
    (results / "readings" / "video.md").write_text("<!-- dated -->\n\nMasks found 3 cows.\n")
    (results / "readings" / "performance.md").write_text("Step at 12 img/s.\n")
    pages = gen_docs().results_pages(results)
    video = pages["results/video.md"]
    assert video.rstrip().endswith("Masks found 3 cows.") and "<!--" not in video
    assert "## Notes on these runs" in video
    assert "Step at 12 img/s." in pages["results/performance.md"]
    assert "not measured yet" in pages["results/dense.md"]  # no JSON, no notes: said so


def test_every_reading_is_on_a_results_page():
    """Every hand-written note in bench/results/readings reaches the site."""
    pages = gen_docs().results_pages()
    for reading in sorted((ROOT / "bench" / "results" / "readings").glob("*.md")):
        marker = f"`bench/results/readings/{reading.name}`"
        assert any(marker in str(text) for text in pages.values()), reading.name


def test_readme_is_a_short_front_door_whose_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert local and all((ROOT / t).exists() for t in local), [
        t for t in local if not (ROOT / t).exists()
    ]
