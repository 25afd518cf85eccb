"""selfsup: self-supervised visual representation learning with pretext tasks."""

__version__ = "0.1.0"
