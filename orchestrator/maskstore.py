"""Trial masks in the study directory: ``OUT/masks/<key>.safetensors``, one per configuration.

With ``save_masks: true`` in the spec, each trial returns its masks and the driver stores them
here before it records the row, so a row's ``masks_path`` (relative to ``OUT``) never names a
missing file. The file name is the content hash of the trial's configuration
(:meth:`orchestrator.trial.TrialConfig.masks_key`): retries and validation runs of one
configuration share one file. Should a configuration ever produce different masks (a
non-deterministic GPU kernel), the new masks get their own file ``<key>-<digest>.safetensors``
instead of overwriting the first, so every row keeps pointing at the masks it measured.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MASKS_DIR = "masks"
#: safetensors metadata key holding the configuration's key.
KEY_METADATA = "pathsweep_masks_key"


def masks_bytes(masks: Mapping[str, Any], key: str) -> bytes:
    """The safetensors file contents for ``masks`` (bool tensors), with ``key`` as metadata."""
    import torch
    from safetensors.torch import save

    tensors = {name: m.detach().to("cpu", torch.bool).contiguous() for name, m in masks.items()}
    return save(tensors, metadata={KEY_METADATA: key})


def store_masks(out: str | Path, masks: Mapping[str, Any], key: str) -> str:
    """Write ``masks`` under ``OUT/masks/`` (atomically) and return their path relative to ``OUT``.

    An existing file with the same contents is reused; one with different contents is kept and
    the new masks go to ``<key>-<digest>.safetensors``.
    """
    if not key or not all(c in "0123456789abcdef" for c in key):
        raise ValueError(f"a masks key must be lowercase hex digits, but got key={key!r}")
    data = masks_bytes(masks, key)
    directory = Path(out) / MASKS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{key}.safetensors"
    target = directory / name
    if target.exists() and target.read_bytes() != data:
        name = f"{key}-{hashlib.sha256(data).hexdigest()[:8]}.safetensors"
        target = directory / name
    if not (target.exists() and target.read_bytes() == data):
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)  # a crash never leaves a half-written mask file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return f"{MASKS_DIR}/{name}"
