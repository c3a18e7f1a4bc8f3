"""ONNX export of a trained network, checked against PyTorch with ONNX Runtime, optionally quantised to int8.

``python -m xmodal.export MODEL -o model.onnx [--modality M] [--int8 --calibrate FILE ...] [--overwrite]``

What is exported is the network of one modality: its stem, the shared trunk and its head, on that modality's
feature map, with the padding to the trunk's size multiple and the crop back inside the graph (any height and width,
any batch). The adapters stay outside, as in the library:

- images: the input *is* the image, ``(B, C, H, W)`` float32 in [0, 1] (``C`` = the model's channels; a non-blind
  model takes the noise-level map as one more channel); the output is the denoised image (not clipped);
- stacks: ``(B, 2k + 1, H, W)``, one band with its ``k`` spectral neighbours per side (per-band scaled), and the output
  the middle band ``(B, 1, H, W)``;
- video: ``(B, (2k + 1) * C, H, W)``, one frame with its ``k`` neighbours per side (frames in time order, their ``C``
  channels side by side), and the output the middle frame ``(B, C, H, W)``;
- speech: the compressed complex STFT ``(B, 2, F, N)`` (F = ``n_fft // 2 + 1``, fixed; N frames, any) and the output
  the estimate of the clean one; the STFT, its inverse and the level normalisation stay with the caller (a running
  level, ``audio.running_rms_seconds`` in the embedded config: multiply each frame's spectrum by
  :func:`xmodal.adapters.audio.running_gains` before compressing it, divide the decompressed estimate by it).
- causal speech models (``model.causal``) also take the past frames of each causal convolution, ``past_0 ..
  past_{k-1}`` (``(B, C_i, F_i, P_i)``, listed in the metadata as ``xmodal.states``), and return the updated ones,
  ``past_0_out ..``: zeros give the whole-signal output; feeding each call's outputs to the next call streams a signal
  a few frames at a time (``xmodal.load`` of the file streams it through :meth:`xmodal.Denoiser.stream`).

The file's metadata (``metadata_props``) holds the modality, the size multiple and the model's resolved config.
After writing, ONNX Runtime runs the file on random inputs of two odd sizes and the outputs are compared with
PyTorch's; a difference above the tolerance removes the file and raises.

``--int8`` writes a second file quantised statically to int8 (ONNX Runtime QDQ: per-channel int8 weights, uint8
activations, the convolutions of the trunk in int8; the stem and the head stay in float). Activation ranges are
calibrated on ``--calibrate`` files: a few noisy inputs like those the model will denoise (for a video model, clips:
video files, folders of frames or ``(T, H, W[, C])`` ``.npy`` files, as ``xmodal.denoise`` reads them), run through the
PyTorch denoiser as in deployment (tiles, chunks, scaling) while the network's inputs are recorded. Its difference from
PyTorch is reported without a tolerance: ``benchmarks/onnx_export.py`` measures what it costs in PSNR and gains in
speed.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xmodal._cli import command_name, run_command

__all__ = ["ExportReport", "OnnxNet", "OnnxRuntimeNet", "embedded_config", "export_onnx", "load_onnx", "main"]

#: largest |onnxruntime - torch| accepted for the fp32 file (features are O(1); measured differences are ~1e-6)
TOLERANCE = 1e-4


class OnnxNet(nn.Module):
    """One modality of a :class:`~xmodal.models.DenoisingNet` as a plain ``features -> estimate`` module whose padding
    is written with shape arithmetic (no Python branch on sizes), so that a traced graph holds for every size.

    A causal network (``model.causal``) also takes and returns the past frames of each causal convolution
    (:attr:`state_shapes`): ``forward(x, *pasts) -> (estimate, *new_pasts)``. Zero pasts give the whole-signal
    output; feeding each call's new pasts to the next streams the signal frame by frame, as
    :class:`xmodal.streaming.SpeechStream` does with the PyTorch model.
    """

    def __init__(self, net: nn.Module, modality: str) -> None:
        super().__init__()
        from xmodal.models.layers import CausalConv2d

        if modality not in net.io:
            raise ValueError(f"the network has no stem/head for modality {modality!r} (it has {net.modalities})")
        self.stem = net.stems[modality]
        self.trunk = net.trunk
        self.head = net.heads[modality]
        self.pad_mode = net.io[modality].pad_mode
        self.multiple = int(net.trunk.size_multiple)
        self.time_multiple = int(getattr(net.trunk, "time_multiple", self.multiple))
        self.causal = bool(getattr(net.trunk, "causal", False))
        self.convs = [m for m in (self.stem, self.trunk, self.head) for m in m.modules()
                      if isinstance(m, CausalConv2d)] if self.causal else []

    def state_shapes(self, channels: int, freqs: int) -> list[tuple[int, int, int]]:
        """``(channels, bins, frames)`` of each causal convolution's past (the batch axis comes first) for inputs of
        ``channels`` x ``freqs``."""
        from xmodal.models.layers import StreamState, streaming

        state = StreamState()
        with torch.no_grad(), streaming(state):
            self(torch.zeros(1, channels, freqs, 1))
        return [tuple(state.pasts[id(c)].shape[1:]) for c in self.convs]

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2], x.shape[-1]
        m, mt = self.multiple, self.time_multiple
        xp = F.pad(x, (0, (mt - W % mt) % mt, 0, (m - H % m) % m), mode=self.pad_mode)  # -> multiples of m, mt
        return self.head(self.trunk(self.stem(xp)), xp)[..., :H, :W]

    def forward(self, x: torch.Tensor, *pasts: torch.Tensor):
        """``(B, C_m, H, W)`` features -> ``(B, C_out, H, W)`` estimate (as ``DenoisingNet.forward``); causal
        networks: ``(features, *pasts) -> (estimate, *new_pasts)``."""
        if not pasts:
            return self._net(x)
        from xmodal.models.layers import StreamState, streaming

        state = StreamState()
        state.pasts.update({id(c): p for c, p in zip(self.convs, pasts)})
        with streaming(state):
            y = self._net(x)
        return (y, *[state.pasts[id(c)] for c in self.convs])


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and measured.

    Attributes:
        path: the fp32 ONNX file.
        modality: the exported modality.
        input_shape: the input's shape with its dynamic axes named (``"batch"``, ``"height"``, ``"width"``...).
        max_abs_diff: largest |ONNX Runtime - PyTorch| over the check inputs (fp32 file).
        int8_path: the int8 file (``None`` without ``int8``).
        int8_max_abs_diff: the same difference for the int8 file.
        calibration_inputs: network inputs (tiles, chunks) the int8 ranges were measured on.
        states: past-frame inputs (and outputs) of a causal export (0 otherwise).
    """

    path: Path
    modality: str
    input_shape: tuple
    max_abs_diff: float
    int8_path: Path | None = None
    int8_max_abs_diff: float | None = None
    calibration_inputs: int = 0
    states: int = 0


class OnnxRuntimeNet(nn.Module):
    """An exported file run by ONNX Runtime (CPU), in place of the network inside xmodal's denoisers:
    ``forward(features, modality)`` as :class:`~xmodal.models.DenoisingNet`. See :func:`load_onnx`.

    Args:
        path: an ``.onnx`` file written by :func:`export_onnx` (fp32 or int8).
        threads: ONNX Runtime intra-op threads (0: torch's current number).
    """

    def __init__(self, path: str | os.PathLike, threads: int = 0) -> None:
        super().__init__()
        _need("onnxruntime")
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or max(1, torch.get_num_threads())
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ValueError(f"{self.path}: not a loadable ONNX file ({str(e).splitlines()[0]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "xmodal.modality" not in meta:
            raise ValueError(f"{self.path}: not an xmodal export (no xmodal.modality in its metadata)")
        self.modality = meta["xmodal.modality"]
        self.io = {self.modality: None}
        self.trunk = nn.Module()
        self.trunk.size_multiple = int(meta["xmodal.size_multiple"])
        self.metadata = meta
        frames = meta.get("xmodal.receptive_field_frames")
        self.receptive_field_frames = int(frames) if frames is not None else None
        self._input = self.session.get_inputs()[0].name
        self.state_shapes = [tuple(s) for s in json.loads(meta.get("xmodal.states", "[]"))]
        self.trunk.causal = bool(self.state_shapes)  # a causal export streams (its pasts are inputs and outputs)
        self.trunk.time_multiple = 1 if self.state_shapes else self.trunk.size_multiple

    @property
    def modalities(self) -> list[str]:
        return [self.modality]

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        if modality != self.modality:
            raise KeyError(f"{self.path} is the {self.modality} network, not {modality!r}")
        feed = {self._input: np.ascontiguousarray(x.detach().float().cpu().numpy())}
        if not self.state_shapes:
            return torch.from_numpy(self.session.run(None, feed)[0]).to(x.device)
        from xmodal.models.layers import current_stream

        state = current_stream()  # inside xmodal.models.layers.streaming: continue that stream, else start from zeros
        past = state.pasts if state is not None else {}
        B = x.shape[0]
        for i, shape in enumerate(self.state_shapes):
            p = past.get(("onnx", i))
            if p is not None and p.shape[0] != B:  # as the PyTorch network's causal convolutions
                raise ValueError(f"a stream's frames changed batch from {p.shape[0]} to {B}; reset the stream first")
            feed[f"past_{i}"] = p if p is not None else np.zeros((B, *shape), np.float32)
        y, *new = self.session.run(None, feed)
        if state is not None:
            past.update({("onnx", i): p for i, p in enumerate(new)})
        return torch.from_numpy(y).to(x.device)


def load_onnx(path: str | os.PathLike):
    """A denoiser of the exported file's modality whose network runs in ONNX Runtime (``xmodal.load`` of the file):
    files, tiling, chunking and scaling work as with the PyTorch model. CPU, fp32 arithmetic (the int8 file computes
    the trunk's convolutions in int8).

    Raises:
        ValueError: no such file, not a loadable ONNX file, or not one written by :func:`export_onnx`.
    """
    from xmodal.denoise import load

    return load(path)


def embedded_config(net: OnnxRuntimeNet):
    """The resolved config (of the exported modality) stored in an export's metadata."""
    import yaml

    from xmodal.config import config_from_dict

    return config_from_dict(yaml.safe_load(net.metadata["xmodal.config"]), f"{net.path} (embedded config)")


def _check_shapes(modality: str, config, channels: int, multiple: int) -> tuple[tuple, list[tuple[int, ...]]]:
    """``(symbolic input shape, concrete check shapes)``: odd sizes that are not multiples of the trunk's."""
    if modality == "speech":
        freqs = config.audio.n_fft // 2 + 1
        return ("batch", channels, freqs, "frames"), [(1, channels, freqs, 3 * multiple + 5),
                                                       (2, channels, freqs, multiple + 1)]
    return ("batch", channels, "height", "width"), [(1, channels, 2 * multiple + 3, 3 * multiple + 1),
                                                    (2, channels, multiple + 5, 2 * multiple - 1)]


def _feed(x: np.ndarray, states: list[tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The network input ``x`` with zero pasts (a whole signal) for a causal export."""
    return {"noisy": x, **{f"past_{i}": np.zeros((x.shape[0], *s), np.float32) for i, s in enumerate(states)}}


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _ort_outputs(path: Path, inputs: list[np.ndarray], states: list[tuple[int, ...]]) -> list[np.ndarray]:
    session = _session(path)
    return [session.run(None, _feed(x, states))[0] for x in inputs]


def _ort_streamed(path: Path, x: np.ndarray, states: list[tuple[int, ...]], cut: int) -> np.ndarray:
    """A causal export run on frames ``[:cut]`` then ``[cut:]`` of ``x``, the pasts of the first call fed to the
    second: the output must equal one call on all of ``x``."""
    session = _session(path)
    y1, *pasts = session.run(None, _feed(x[..., :cut], states))
    y2 = session.run(None, {"noisy": x[..., cut:], **{f"past_{i}": p for i, p in enumerate(pasts)}})[0]
    return np.concatenate([y1, y2], axis=-1)


def _need(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ImportError(f"ONNX export needs the `{module}` package: pip install \"xmodal[export]\" "
                          "(onnx and onnxruntime)")


def export_onnx(model: str | os.PathLike | None, path: str | os.PathLike, modality: str | None = None,
                opset: int = 17, int8: bool = False, calibration: list[str | os.PathLike] | tuple = (),
                seed: int = 0, overwrite: bool = False) -> ExportReport:
    """Export one modality of a trained model to ONNX and check it against PyTorch with ONNX Runtime.

    Args:
        model: a bundled name, a run directory or a ``.safetensors`` file (as :func:`xmodal.load`).
        path: the ``.onnx`` file to write (written atomically; its folder is created).
        modality: which modality (needed for a jointly trained model; else it must be the model's, or ``None``).
        opset: ONNX opset version.
        int8: also write ``<stem>.int8.onnx``, statically quantised to int8 (see the module docstring).
        calibration: for ``int8``: noisy input files (audio, image or stack files, or clips: the files the model's
            denoiser reads; for an image or speech model also folders of them), or one such path.
        seed: seed of the random check inputs.
        overwrite: replace an existing ``path`` (and ``<stem>.int8.onnx`` with ``int8``); else they are refused
            before any work.

    Returns:
        An :class:`ExportReport`.

    Raises:
        ValueError: a bad ``path`` suffix or ``opset``, an unknown model, a modality the model lacks, ``int8``
            without ``calibration`` (or a calibration file the denoiser cannot read, named), or an export that
            differs from PyTorch by more than :data:`TOLERANCE` (the file is then not written).
        FileExistsError: ``path`` (or, with ``int8``, ``<stem>.int8.onnx``) exists and ``overwrite`` is false
            (nothing is written).
        ImportError: ``onnx`` or ``onnxruntime`` is not installed.
    """
    from xmodal._fs import atomic_write, write_error
    from xmodal.checkpoint import load_run
    from xmodal.config import config_to_dict
    from xmodal.pretrained import resolve_model

    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"{path}: the output must be a .onnx file, got {path.suffix or 'no extension'!r}")
    if int8 and path.stem.lower().endswith(".int8"):
        raise ValueError(f"{path}: name the float model's file; with int8 its quantised twin is written beside it as "
                         f"<name>.int8.onnx ({path.with_name(path.stem[:-5] + '.int8.onnx').name} for "
                         f"{path.stem[:-5]}.onnx)")
    if not 11 <= opset <= 21:
        raise ValueError(f"`opset` must be between 11 and 21, got {opset}")
    for out in (path, path.with_name(path.stem + ".int8.onnx")) if int8 else (path,):
        if out.exists() and not overwrite:  # as xmodal.denoise's outputs
            raise FileExistsError(f"{out}: output file already exists (pass overwrite=True, or --overwrite)")
    if isinstance(calibration, (str, os.PathLike)):  # one file (or folder), not its characters
        calibration = [calibration]
    if int8 and not calibration:
        raise ValueError("int8 needs calibration inputs (--calibrate FILE ...): a few noisy files like those the "
                         "model will denoise; the int8 activation ranges are measured on them")
    for f in calibration if int8 else ():
        if not Path(f).exists():
            raise ValueError(f"{f}: calibration file not found")
    _need("onnx")
    _need("onnxruntime")
    import yaml

    source = resolve_model(model)
    net, config = load_run(source)
    if modality is None:
        if config.joint_run:
            raise ValueError(f"{source}: a model trained jointly on {' and '.join(config.modalities)}: say which "
                             "modality to export (--modality)")
        modality = config.modality
    elif modality not in config.modalities:
        raise ValueError(f"{source}: a model of {' and '.join(config.modalities)}, not {modality!r}")
    view = config.for_modality(modality)
    module = OnnxNet(net.float().eval(), modality).eval()
    channels = net.io[modality].channels
    symbolic, shapes = _check_shapes(modality, view, channels, module.multiple)
    dynamic = {i: name for i, name in enumerate(symbolic) if isinstance(name, str)}
    states = module.state_shapes(channels, shapes[0][2]) if module.causal else []
    rng = np.random.default_rng(seed)
    inputs = [rng.random(s, dtype=np.float32) if modality != "speech" else
              rng.standard_normal(s, dtype=np.float32) for s in shapes]
    with torch.no_grad():
        expected = [module(torch.from_numpy(x)).numpy() for x in inputs]

    try:  # the work folder beside the output (a read-only or missing destination is said here, by its name)
        path.parent.mkdir(parents=True, exist_ok=True)
        workdir = tempfile.TemporaryDirectory(prefix=".xmodal-export-", dir=path.parent)
    except OSError as e:
        raise write_error(path, e, e.filename) from None
    meta = {"xmodal.modality": modality, "xmodal.size_multiple": str(module.multiple),
            "xmodal.input": f"{list(symbolic)}", "xmodal.config": yaml.safe_dump(config_to_dict(view), sort_keys=False)}
    if states:  # causal: the pasts of every causal convolution are inputs and outputs (streaming)
        meta["xmodal.states"] = json.dumps([list(s) for s in states])
    if modality == "speech":  # chunked inference needs it; it is measured with gradients, which ONNX lacks
        from xmodal.denoise import _receptive_field_frames

        meta["xmodal.receptive_field_frames"] = str(_receptive_field_frames(net, modality, channels,
                                                                            torch.device("cpu")))
    try:
        with workdir as tmp:
            raw = Path(tmp) / "raw.onnx"
            proto = _write_graph(raw, module, inputs[0], states, dynamic, opset, meta)
            got = _ort_outputs(raw, inputs, states)
            if states:  # and streamed in two calls, the first call's pasts fed to the second
                got.append(_ort_streamed(raw, inputs[0], states, inputs[0].shape[-1] // 3))
                expected = [*expected, expected[0]]
            diff = max(float(np.abs(g - e).max()) for g, e in zip(got, expected))
            if not diff <= TOLERANCE:
                raise ValueError(f"{path}: the ONNX graph differs from PyTorch by {diff:.3g} (more than "
                                 f"{TOLERANCE:g}); nothing was written")
            report = ExportReport(path, modality, symbolic, diff, states=len(states))
            if int8:
                q = Path(tmp) / "int8.onnx"
                report.calibration_inputs = _write_int8(q, raw, proto, source, modality, calibration, states, path)
                got8 = _ort_outputs(q, inputs, states)
                report.int8_max_abs_diff = max(float(np.abs(g - e).max()) for g, e in zip(got8, expected))
                report.int8_path = path.with_name(path.stem + ".int8.onnx")
            # both files only once everything has worked
            atomic_write(path, lambda t: Path(t).write_bytes(raw.read_bytes()))
            if report.int8_path is not None:
                atomic_write(report.int8_path, lambda t: Path(t).write_bytes(q.read_bytes()))
    except OSError as e:  # a full disk in the work folder: said with the output's name
        if e.errno != errno.ENOSPC or str(path) in str(e):
            raise
        raise write_error(path, e, e.filename) from None
    return report


def _write_graph(raw: Path, module: OnnxNet, x: np.ndarray, states: list, dynamic: dict[int, str], opset: int,
                 meta: dict[str, str]):
    """Trace ``module`` on ``x`` (and zero pasts of ``states``) into the ONNX file ``raw`` with the dynamic axes
    ``dynamic`` and the metadata ``meta``; returns its checked ``ModelProto``."""
    import warnings

    import onnx

    names = [f"past_{i}" for i in range(len(states))]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        x0 = torch.from_numpy(x)
        pasts = tuple(torch.zeros(x0.shape[0], *s) for s in states)
        torch.onnx.export(module, (x0, *pasts), str(raw), dynamo=False, opset_version=opset,
                          input_names=["noisy", *names], output_names=["denoised", *[n + "_out" for n in names]],
                          dynamic_axes={"noisy": dynamic, "denoised": dynamic, **{n: {0: "batch"} for n in names},
                                        **{n + "_out": {0: "batch"} for n in names}})
    proto = onnx.load(str(raw))
    onnx.helper.set_model_props(proto, meta)
    proto.producer_name = "xmodal"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(raw))
    return proto


def _write_int8(q: Path, raw: Path, proto, source: Path, modality: str, calibration, states: list,
                path: Path) -> int:
    """Quantise ``raw`` (``proto``) into ``q`` with activation ranges measured on the network inputs the model's
    denoiser makes of the ``calibration`` files (a warning when they are too few to measure ranges on); returns how
    many inputs were used. ``path``: the export's name, for messages."""
    import warnings

    features = _calibration_features(source, modality, calibration, q.parent)
    positions = sum(f.shape[0] * int(np.prod(f.shape[2:])) for f in features)
    if positions < MIN_CALIBRATION_POSITIONS:
        warnings.warn(f"{path}: int8 ranges measured on only {positions} input positions (pixels or time-frequency "
                      f"bins; {MIN_CALIBRATION_POSITIONS} or more recommended): they may clip real inputs; calibrate "
                      "on a few full-size files like those to denoise", stacklevel=3)
    _quantize(raw, q, [_feed(f, states) for f in features], proto)
    return len(features)


#: at most this many network inputs (tiles, chunks, band groups) are kept for calibration
MAX_CALIBRATION_INPUTS = 64
#: fewer input positions (pixels, time-frequency bins) than this over all calibration inputs warn: too little to
#: measure activation ranges on (one 256 x 256 image, or about 2 s of speech)
MIN_CALIBRATION_POSITIONS = 65536


def _calibration_files(files: Iterable[str | os.PathLike], modality: str) -> list[Path]:
    """``files`` with each folder given to an image or speech model replaced by the files in it that the model
    denoises (natural order; a folder is one stack for a multispectral model, one clip for a video model).

    Raises:
        ValueError: a path that does not exist, or a folder holding no such file."""
    from xmodal.denoise import _file_kind
    from xmodal.imageio import natural_key

    out: list[Path] = []
    for f in map(Path, files):
        if not f.exists():
            raise ValueError(f"{f}: calibration file not found")
        if f.is_dir() and modality in ("image", "speech"):
            found = sorted((g for g in f.iterdir() if g.is_file() and not g.name.startswith(".")
                            and _file_kind(g) == modality),
                           key=lambda g: natural_key(g.name))
            if not found:
                raise ValueError(f"{f}: a calibration folder of this {modality} model holds no "
                                 f"{'audio' if modality == 'speech' else 'image'} file")
            out.extend(found)
        else:
            out.append(f)
    return out


def _calibration_features(source: Path, modality: str, files, tmp: Path) -> list[np.ndarray]:
    """The network inputs the PyTorch denoiser of ``source`` produces on ``files`` (recorded with a forward hook)."""
    from xmodal.denoise import _KIND, _STACK_SUFFIXES, _file_kind, load

    den = load(source, modality=modality)
    if hasattr(den, "receptive_field"):
        den.receptive_field  # measured (with random probes through the network) before the recording starts
    seen: list[np.ndarray] = []

    def record(module: nn.Module, args: tuple) -> None:
        if len(seen) < MAX_CALIBRATION_INPUTS:
            seen.append(np.ascontiguousarray(args[0].detach().float().cpu().numpy()))

    handle = den.model.register_forward_pre_hook(record)
    try:
        for i, f in enumerate(_calibration_files(files, den.modality)):
            kind = _file_kind(f) if f.is_file() else None
            if den.modality == "video" and f.suffix.lower() == ".npy":
                kind = "video"  # a (T, H, W[, C]) clip, as xmodal.denoise reads a .npy for a video model
            wanted = {"multispectral": "image"}.get(den.modality, den.modality)  # stacks are image files
            if kind is not None and kind != wanted:
                raise ValueError(f"{f}: a calibration file of this {den.modality} model must be one it denoises, "
                                 f"this is {_KIND[kind]}")
            if den.modality == "multispectral" and f.is_file() and f.suffix.lower() not in _STACK_SUFFIXES:
                raise ValueError(f"{f}: a calibration stack of this multispectral model must be a "
                                 f"{'/'.join(_STACK_SUFFIXES)} file or a folder of single-band TIFFs, got "
                                 f"{f.suffix or 'no extension'!r}")
            try:
                den.denoise_file(f, tmp / f"calibration_{i}{f.suffix}")
            except (ValueError, OSError, RuntimeError) as e:
                message = str(e).replace(str(tmp / f"calibration_{i}{f.suffix}"), "its calibration output")
                raise ValueError(message if str(f) in message else f"{f}: {message}") from None
    finally:
        handle.remove()
    if not seen:
        raise ValueError("the calibration files gave the network no input")
    return seen


def _quantize(raw: Path, out: Path, features: list[dict[str, np.ndarray]], proto) -> None:
    """Static QDQ int8 quantisation of the trunk's convolutions, ranges from the input ``features`` (min/max)."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(features)

        def get_next(self) -> dict | None:
            return next(self.items, None)

    keep_float = [n.name for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose")
                  and not n.name.startswith("/trunk/")]  # the stem and the head: where int8 costs most
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs notes on every shape tensor it leaves in float
    try:
        quantize_static(str(raw), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "ConvTranspose"], nodes_to_exclude=keep_float)
    finally:
        root.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 written and checked, 2 error, 130 Ctrl-C, 143 SIGTERM)."""
    return run_command(_main, argv, "no file left half-written")


def _main(argv: list[str] | None) -> int:
    from xmodal.pretrained import bundled_names

    p = argparse.ArgumentParser(prog=command_name("export"), description=__doc__.split("\n")[0])
    p.add_argument("model", help=f"bundled name ({', '.join(bundled_names())}), run directory or .safetensors")
    p.add_argument("-o", "--output", required=True, metavar="FILE.onnx", help="the ONNX file to write")
    p.add_argument("--modality", choices=["speech", "image", "multispectral", "video"], default=None,
                   help="which modality of a jointly trained model (default: the model's only one)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    p.add_argument("--int8", action="store_true", help="also write FILE.int8.onnx, quantised to int8 (needs "
                                                       "--calibrate)")
    p.add_argument("--calibrate", nargs="+", default=(), metavar="FILE",
                   help="noisy inputs (audio, image, stack files or clips; folders of audio or image files) like "
                        "those the model will denoise: the int8 activation ranges are measured on them")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (FILE.onnx, FILE.int8.onnx)")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        if args.calibrate and not args.int8:
            raise ValueError("--calibrate is for --int8")
        report = export_onnx(args.model, args.output, args.modality, args.opset, args.int8,
                             calibration=args.calibrate, overwrite=args.overwrite)
    except (ValueError, OSError, ImportError) as e:
        message = str(e).replace("(pass overwrite=True, or --overwrite)", "(pass --overwrite)")  # the CLI's flag
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(f"wrote {report.path} ({report.modality}, input {list(report.input_shape)}); ONNX Runtime vs PyTorch: max "
          f"|difference| {report.max_abs_diff:.2e}")
    if report.states:
        print(f"causal: {report.states} past-frame inputs past_0..past_{report.states - 1} and outputs "
              f"past_0_out..; ONNX Runtime streamed in two calls = one call (checked)")
    if report.int8_path is not None:
        print(f"wrote {report.int8_path} (int8, calibrated on {report.calibration_inputs} network inputs); max "
              f"|difference| from PyTorch fp32 {report.int8_max_abs_diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
