"""selfsup: self-supervised visual representation learning with pretext tasks.

The public Python surface (docs/python.md), each name with an example in its docstring:

- configs and training: `make_config`, `pretrain`, `sample_data`, `list_tasks`,
  `build_task`, `PretextTask`, `build_backbone`, `list_backbones`;
- the losses: `counting_loss`, `triplet_loss`, `info_nce_loss`, `ranking_loss`;
- the batched views, on whole (B, 3, H, W) batches on any device: `views`
  (`selfsup.data.views`);
- trained models: `load_backbone`, `embed`.

Names are imported on first use, so `import selfsup` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "make_config": "selfsup.api",
    "embed": "selfsup.api",
    "sample_data": "selfsup.api",
    "pretrain": "selfsup.api",
    "list_tasks": "selfsup.tasks",
    "build_task": "selfsup.tasks",
    "PretextTask": "selfsup.tasks",
    "build_backbone": "selfsup.backbones",
    "list_backbones": "selfsup.backbones",
    "counting_loss": "selfsup.tasks.counting",
    "triplet_loss": "selfsup.tasks.exemplar",
    "info_nce_loss": "selfsup.tasks.exemplar",
    "ranking_loss": "selfsup.tasks.transitive",
    "load_backbone": "selfsup.runs",
}
_MODULES = {"views": "selfsup.data.views"}

__all__ = sorted([*_PUBLIC, *_MODULES])


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'selfsup' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
