"""Bundled models and the resolver that turns a model name or path into something :func:`xmodal.load` can load.

A bundled model is a folder next to this file holding ``config.yaml``, ``model.safetensors`` and ``MODEL_CARD.md``
(training data, recipe, metrics, size). Names:

    ``None``, ``"default"``, ``"speech"``          ->  ``xmodal/pretrained/speech_default/``
    ``"speech_rt"``, ``"realtime"``                ->  ``xmodal/pretrained/speech_rt/`` (causal: streams)
    ``"image_gray"``, ``"gray"``, ``"image"``       ->  ``xmodal/pretrained/image_gray/``
    ``"image_color"``, ``"color"``, ``"colour"``    ->  ``xmodal/pretrained/image_color/``
    ``"image_color_real"``, ``"color_real"``,
    ``"colour_real"``, ``"photo"``                  ->  ``xmodal/pretrained/image_color_real/`` (camera noise)
    ``"multispectral"``, ``"stack"``                ->  ``xmodal/pretrained/multispectral/``
    ``"video_gray"``, ``"video"``                   ->  ``xmodal/pretrained/video_gray/``
    ``"video_color"``, ``"video_colour"``           ->  ``xmodal/pretrained/video_color/``
    ``"video_color_real"``, ``"video_colour_real"``,
    ``"video_photo"``                               ->  ``xmodal/pretrained/video_color_real/`` (camera noise)
    ``"video_gray_real"``                           ->  ``xmodal/pretrained/video_gray_real/`` (camera noise)

Anything else must be a run directory (``config.yaml`` + ``model.safetensors``) or a ``.safetensors`` file with an
embedded config. This module only resolves paths: it imports nothing heavy.

Example:
    >>> resolve_model("runs/speech")  # doctest: +SKIP
    PosixPath('runs/speech')
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

__all__ = ["BUNDLED", "bundled_names", "resolve_model"]

_HERE = Path(__file__).resolve().parent

BUNDLED: dict[str, str] = {"speech": "speech_default", "speech_rt": "speech_rt", "image_gray": "image_gray",
                           "image_color": "image_color", "image_color_real": "image_color_real",
                           "multispectral": "multispectral", "video_gray": "video_gray", "video_color": "video_color",
                           "video_color_real": "video_color_real", "video_gray_real": "video_gray_real"}
"""Bundled model name -> folder inside ``xmodal/pretrained``."""

_ALIASES: dict[str, str] = {"default": "speech", "speech": "speech", "speech_rt": "speech_rt", "realtime": "speech_rt",
                            "image_gray": "image_gray", "gray": "image_gray", "image": "image_gray",
                            "image_color": "image_color", "color": "image_color", "colour": "image_color",
                            "image_color_real": "image_color_real", "color_real": "image_color_real",
                            "colour_real": "image_color_real", "photo": "image_color_real",
                            "multispectral": "multispectral", "stack": "multispectral",
                            "video_gray": "video_gray", "video": "video_gray",
                            "video_color": "video_color", "video_colour": "video_color",
                            "video_color_real": "video_color_real", "video_colour_real": "video_color_real",
                            "video_photo": "video_color_real", "video_gray_real": "video_gray_real"}
_REQUIRED = ("config.yaml", "model.safetensors")


def bundled_names() -> list[str]:
    """Every name :func:`resolve_model` accepts for a bundled model (aliases included), sorted."""
    return sorted(_ALIASES)


def resolve_model(path_or_name: str | os.PathLike | None = None) -> Path:
    """Resolve a bundled model name, a run directory or a weights file to a path for :func:`xmodal.load_run`.

    Args:
        path_or_name: a bundled name (``None``, ``"default"`` or ``"speech"`` for the bundled speech model; the
            image and multispectral names listed in the module docstring); else a run directory or a
            ``.safetensors`` file with an embedded config.

    Returns:
        The folder of the bundled model, or the given path.

    Raises:
        FileNotFoundError: a bundled name whose folder is not installed (missing ``config.yaml`` or weights).
        ValueError: neither a bundled name nor an existing directory / ``.safetensors`` file.
    """
    if path_or_name is None or (isinstance(path_or_name, str) and path_or_name in _ALIASES):
        name = _ALIASES["default" if path_or_name is None else path_or_name]
        if path_or_name is not None and (Path(path_or_name) / "config.yaml").is_file():
            warnings.warn(f"{path_or_name!r} is a bundled model's name and also a run directory here; loading the "
                          f"bundled model (pass './{path_or_name}' for the directory)", stacklevel=3)
        folder = _HERE / BUNDLED[name]
        missing = [f for f in _REQUIRED if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"bundled model {name!r} is not installed at {folder} (missing {', '.join(missing)}); "
                "pass a run directory or a .safetensors file instead")
        return folder
    path = Path(path_or_name)
    if path.is_dir() or (path.is_file() and path.suffix == ".safetensors"):
        return path
    what = "not a run directory or a .safetensors file" if path.exists() else "no such file or directory"
    raise ValueError(f"unknown model {str(path_or_name)!r}: {what}; bundled names are "
                     f"{', '.join(bundled_names())}")
