"""The genstudio studio (Gradio): `genstudio studio`, or `ui.app.build(...)` and `ui.app.launch(...)`."""
from __future__ import annotations


def build(*args, **kwargs):
    """See ui.app.build."""
    from .app import build as _build

    return _build(*args, **kwargs)


def launch(*args, **kwargs):
    """See ui.app.launch."""
    from .app import launch as _launch

    return _launch(*args, **kwargs)


__all__ = ["build", "launch"]
