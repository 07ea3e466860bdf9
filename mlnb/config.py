"""Session settings: ``mlnb.config.workspace = "runs/.mlnb"``, ``mlnb.config.device = "cpu"``.

One object per process. Environment variables give the starting values
(``MLNB_WORKSPACE``, ``MLNB_DEVICE``), so a notebook and its tests can point
somewhere else without code changes.
"""

from __future__ import annotations

import os
from pathlib import Path

from .exceptions import MlnbError

_DEVICES = ("auto", "cpu", "cuda", "mps")
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_ENGINES = ("local", "ray")


class Config:
    """Settings read by mlnb's functions; assign to change them.

    Attributes
    ----------
    workspace : Path
        Folder for caches, labels and heads (default ``./.mlnb``).
    device : str
        ``"auto"`` (cuda, then mps, then cpu) or one of ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
    precision : str
        ``"auto"`` (bf16 on CPUs that support it, fp16 on CUDA), ``fp32``, ``bf16``, ``fp16``.
    batch_size : int or None
        Images per forward pass; ``None`` picks one from free memory.
    display_limit : int
        Rows shown by ``%%mlsql`` (the frame itself keeps all rows).
    engine : str
        ``"local"`` or ``"ray"``.
    """

    def __init__(self) -> None:
        self._workspace = Path(os.environ.get("MLNB_WORKSPACE", ".mlnb"))
        self._device = os.environ.get("MLNB_DEVICE", "auto")
        self._precision = os.environ.get("MLNB_PRECISION", "auto")
        self.batch_size: int | None = None
        self.display_limit = 20
        self._engine = "local"

    @property
    def workspace(self) -> Path:
        return self._workspace

    @workspace.setter
    def workspace(self, value: str | os.PathLike[str]) -> None:
        self._workspace = Path(value)

    @property
    def device(self) -> str:
        return self._device

    @device.setter
    def device(self, value: str) -> None:
        if value.split(":")[0] not in _DEVICES:
            raise MlnbError(f"Unknown device {value!r}: use one of {', '.join(_DEVICES)}.")
        self._device = value

    @property
    def precision(self) -> str:
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in _PRECISIONS:
            raise MlnbError(f"Unknown precision {value!r}: use one of {', '.join(_PRECISIONS)}.")
        self._precision = value

    @property
    def engine(self) -> str:
        return self._engine

    @engine.setter
    def engine(self, value: str) -> None:
        if value not in _ENGINES:
            raise MlnbError(f"Unknown engine {value!r}: use one of {', '.join(_ENGINES)}.")
        if value == "ray":
            # Refused rather than silently ignored until the Ray engine exists.
            raise MlnbError("The Ray engine is not available in this version yet; mlnb.config.engine stays 'local'.")
        self._engine = value

    def __repr__(self) -> str:
        return (
            f"Config(workspace={str(self.workspace)!r}, device={self.device!r}, "
            f"precision={self.precision!r}, batch_size={self.batch_size!r}, "
            f"display_limit={self.display_limit!r}, engine={self.engine!r})"
        )


config = Config()
