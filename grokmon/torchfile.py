"""Read a ``torch.save`` file that a user hands grokmon, without ever running code from it.

Every file grokmon reads back (monitor state, pathways, probe, Trainer-checkpoint pathways) goes
through :func:`load_torch_file`, which calls ``torch.load(..., weights_only=True)``: only tensors
and plain data (dict, list, tuple, str, numbers, None) are rebuilt. A pickle that asks for anything
else (a function, a class, ``os.system``) is refused with :class:`UnsafeFileError` before any of it
runs; a file that cannot be read at all raises :class:`~grokmon.errors.GrokmonError`.

Example:
    >>> import torch, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.pt")
    >>> torch.save({"w": torch.ones(2)}, path)
    >>> load_torch_file(path, what="a test file", fix="write it with torch.save")["w"].tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch

from .errors import GrokmonError, UnsafeFileError

__all__ = ["load_torch_file"]


def load_torch_file(path: str | os.PathLike, *, what: str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that name the file and the fix.

    Args:
        path: the file.
        what: what the file should hold, for messages ("a grokmon monitor state").
        fix: what the user should do when it cannot be read ("pass a file written by GrokkingMonitor.save").

    Raises:
        UnsafeFileError: the file holds objects other than tensors and plain data (nothing of it ran).
        GrokmonError: the file is missing, truncated or not a torch file.
    """
    try:
        return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error) or "Unsupported class" in str(error):
            raise UnsafeFileError(
                f"{os.fspath(path)} is not {what}: it holds objects other than tensors and plain data, which "
                f"grokmon never loads (nothing in it was run); {fix}") from None
        reason = str(error).split("WeightsUnpickler error:")[-1].split("\n\n")[0].strip() or "not a torch file"
        raise GrokmonError(f"cannot read {what} from {os.fspath(path)} ({reason}): {fix}") from error
    except (OSError, RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        raise GrokmonError(f"cannot read {what} from {os.fspath(path)} ({type(error).__name__}: {error}): "
                           f"{fix}") from error
