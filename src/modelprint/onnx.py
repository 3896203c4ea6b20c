"""ONNX models through onnxruntime: a black-box ``Model`` whose first output is read as logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .access import Model
from .errors import ModelFileError


class OnnxModel(Model):
    """An ``.onnx`` file run by onnxruntime (no Python code from the file is ever executed)."""

    output = "logits"

    def __init__(
        self,
        path: str | Path,
        num_classes: int | None = None,
        input_shape=None,
        budget: int | None = None,
        device: str = "cpu",
    ):
        import onnxruntime as ort

        self.path = Path(path)
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]
        )
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers)
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelFileError(f"{self.path}: not a valid ONNX model ({msg})") from None
        inp = self.session.get_inputs()[0]
        if input_shape is None and all(isinstance(d, int) for d in inp.shape[1:]):
            input_shape = tuple(inp.shape[1:])
        out = self.session.get_outputs()[0]
        if num_classes is None and len(out.shape) == 2 and isinstance(out.shape[1], int):
            num_classes = out.shape[1]
        super().__init__(num_classes, input_shape, budget)
        self.input_name = inp.name

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        (out, *_) = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype(np.float32)})
        return torch.from_numpy(np.asarray(out))

    def __repr__(self) -> str:
        return f"OnnxModel({self.path.name})"
