"""Safe model files. Our format is a folder of ``model.safetensors`` + ``config.json`` (architecture,
format version, sha256 of the weights); ONNX goes through onnxruntime, TorchScript through torch.jit, and
plain checkpoints only through ``torch.load(..., weights_only=True)``: a pickle that would run code never runs."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .access import Model
from .digest import sha256_file
from .errors import ConfigError, ModelFileError, UnsafeFileError
from .nets import rebuild

FORMAT = "modelprint-model"
FORMAT_VERSION = 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"
CONVERT_HINT = (
    "re-save the weights from a trusted environment with "
    "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')"
)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` in one rename when the block ends
    without error and is removed otherwise, so a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write a matplotlib figure atomically, in the format its suffix names (png without one), and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


def atomic_dir(path: Path) -> Path:
    """A fresh temporary folder beside ``path``; ``commit_dir`` moves it into place in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))


def commit_dir(tmp: Path, path: Path) -> None:
    """Replace ``path`` by ``tmp`` so that readers see the old folder or the new one, never half of one."""
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.{os.getpid()}.old")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_model(model: nn.Module, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (built by ``make_net``, so it carries ``mp_config``) as a self-describing folder."""
    cfg = getattr(model, "mp_config", None)
    if not cfg:
        raise ConfigError(
            f"cannot save {type(model).__name__} as a modelprint folder: it has no architecture config "
            "(build it with modelprint.nets.make_net, or export it with torch.jit.save / torch.onnx.export)"
        )
    path = Path(path)
    tmp = atomic_dir(path)
    try:
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, tmp / WEIGHTS, metadata={"format": FORMAT})
        dtype = str(next((p.dtype for p in model.parameters()), torch.float32)).removeprefix("torch.")
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "modelprint_version": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "arch": cfg,
            "dtype": dtype,
            "sha256": sha256_file(tmp / WEIGHTS),
            "meta": meta or {},
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
        commit_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def save_any(model: nn.Module, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` in the richest format it allows: a modelprint folder for modelprint's nets, a TorchScript
    archive for a TorchScript module, else its weights as one ``.safetensors`` file (load it again with its class:
    ``load_model(path, arch=Net)``, ``--arch`` on the command line). Returns the path written: a file without a
    suffix gets ``.pt`` (TorchScript) or ``.safetensors``, which tell ``load_model`` how to read it."""
    path = Path(path)
    if getattr(model, "mp_config", None):
        return save_model(model, path, meta)
    scripted = isinstance(model, torch.jit.ScriptModule)
    path = path if path.suffix else path.with_suffix(".pt" if scripted else ".safetensors")
    with atomic_file(path) as tmp:
        if scripted:
            torch.jit.save(model, str(tmp))
        else:
            state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
            save_file(state, tmp, metadata={"format": FORMAT, **{k: str(v) for k, v in (meta or {}).items()}})
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    """The validated ``config.json`` of a modelprint model folder (weights' checksum included)."""
    path = Path(path)
    cfg_file, weights = path / CONFIG, path / WEIGHTS
    if not cfg_file.is_file():
        raise ModelFileError(f"{path}: not a modelprint model folder (no {CONFIG})")
    try:
        config = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{cfg_file}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(
            f"{cfg_file}: not a modelprint model config (format is {config.get('format')!r})"
            if isinstance(config, dict)
            else f"{cfg_file}: expected a JSON object"
        )
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{cfg_file}: format version {version!r} is not supported (this modelprint reads "
            f"up to {FORMAT_VERSION}; upgrade modelprint)"
        )
    for key, kind in (("arch", dict), ("sha256", str), ("dtype", str)):
        if not isinstance(config.get(key), kind):
            raise ModelFileError(f"{cfg_file}: missing or malformed field {key!r}")
    if not weights.is_file():
        raise ModelFileError(f"{path}: {WEIGHTS} is missing")
    if sha256_file(weights) != config["sha256"]:
        raise ModelFileError(f"{weights}: checksum mismatch (the weights were modified or truncated)")
    return config


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], where: Path) -> nn.Module:
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            f"{where}: weights do not fit the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ModelFileError(
                f"{where}: shape mismatch for {k}: file has {tuple(v.shape)}, "
                f"architecture expects {tuple(expected[k].shape)}"
            )
    module.load_state_dict(state)
    return module


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path}: corrupt or truncated safetensors file ({e})") from None


def load_model(
    path: str | Path,
    *,
    arch: str | Callable[..., nn.Module] | None = None,
    input_shape: list[int] | None = None,
    num_classes: int | None = None,
    device: str = "cpu",
    **arch_options: Any,
) -> nn.Module | Model:
    """Load a model file safely.

    - a modelprint folder (``config.json`` + ``model.safetensors``), validated against its checksum;
    - ``.onnx``: returns a ``Model`` backed by onnxruntime (black-box: outputs are read as logits);
    - TorchScript archives;
    - ``.safetensors`` files and plain checkpoints (state dicts) need the network to load into: ``arch`` is
      your own class (or any callable returning the module), an import path ``"my_pkg.nets:Net"`` or
      ``"nets.py:Net"`` called with ``arch_options``, or one of modelprint's nets with ``input_shape`` and
      ``num_classes``. Without ``arch``, the command line's ``--arch`` (``default_arch``) applies.
    Pickles with code are refused, never executed.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file or folder")
    if path.is_dir():
        config = read_config(path)
        try:
            module = rebuild(config["arch"])
        except (ConfigError, KeyError, TypeError) as e:
            raise ModelFileError(f"{path / CONFIG}: unknown or invalid architecture ({e})") from None
        module = _load_state(module.to(getattr(torch, config["dtype"])), _read_safetensors(path / WEIGHTS), path)
        return module.to(device).eval()
    if path.suffix == ".onnx":
        from .onnx import OnnxModel

        return OnnxModel(path, num_classes=num_classes, input_shape=input_shape, device=device)
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    elif _is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location=device).eval()
        except Exception as e:
            raise ModelFileError(f"{path}: corrupt TorchScript archive ({type(e).__name__}: {e})") from None
    else:
        state = _torch_load_weights(path)
    if arch is None and _default_arch:
        arch, arch_options = _default_arch[0], {**_default_arch[1], **arch_options}
    if arch is None:
        raise ConfigError(
            f"{path}: holds only weights; give the network's class (--arch my_pkg.nets:Net [--arch-kwargs JSON], "
            "or load_model(path, arch=Net)), or save it as a modelprint folder"
        )
    if callable(arch) or ":" in arch:
        factory = arch if callable(arch) else import_object(arch)
        try:
            module = factory(**arch_options)
        except Exception as e:
            raise ConfigError(f"{path}: cannot build {arch} with {arch_options} ({type(e).__name__}: {e})") from None
        if not isinstance(module, nn.Module):
            raise ConfigError(f"{arch} made a {type(module).__name__}, not a torch module")
    else:
        if input_shape is None or num_classes is None:
            raise ConfigError(f"{path}: modelprint's net {arch!r} needs input_shape and num_classes")
        from .nets import make_net

        module = make_net(arch, input_shape, num_classes, **arch_options)
    dtype = next(iter(state.values())).dtype if state else torch.float32
    return _load_state(module.to(dtype if dtype.is_floating_point else torch.float32), state, path).to(device).eval()


# the command line's --arch / --arch-kwargs: the network that weights-only files are loaded into
_default_arch: tuple[str, dict[str, Any]] | None = None


def default_arch(arch: str | None, **options: Any) -> None:
    """Load every weights-only file that comes without ``arch`` into ``arch(**options)`` (None: no default)."""
    global _default_arch
    if arch is not None and ":" in arch:
        import_object(arch)  # fail now on a typo, not at the first load
    _default_arch = (arch, options) if arch is not None else None


def import_object(spec: str) -> Any:
    """The object named by ``"package.module:Name"`` or ``"path/to/file.py:Name"`` (the user's own code)."""
    import importlib
    import importlib.util

    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise ConfigError(f"{spec!r}: expected module:Name or file.py:Name")
    try:
        if where.endswith(".py"):
            module_spec = importlib.util.spec_from_file_location(Path(where).stem, where)
            if module_spec is None or not Path(where).is_file():
                raise ConfigError(f"{where}: no such Python file")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(where)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"cannot import {where} ({type(e).__name__}: {e})") from None
    if not hasattr(module, name):
        raise ConfigError(f"{where} has no {name!r}")
    return getattr(module, name)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def _torch_load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint via the weights-only unpickler; nested {'state_dict': ...} accepted."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        code = next((ln for ln in lines if "global" in ln.lower()), None)
        if code is None:  # not a forbidden object: just bytes that are no pickle
            raise ModelFileError(f"{path}: corrupt or truncated checkpoint ({lines[-1] if lines else e})") from None
        raise UnsafeFileError(
            f"{path}: refused: loading this pickle would execute code ({code}); {CONVERT_HINT}"
        ) from None
    except Exception as e:  # the weights-only unpickler runs no code; junk bytes raise all kinds of errors
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"{path}: corrupt or truncated checkpoint ({msg})") from None
    for key in ("state_dict", "model_state_dict", "model", "weights"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFileError(f"{path}: expected a state dict of tensors, found {type(obj).__name__}")
    return obj
