"""Saving a trained checkpoint folder without ever destroying what was there: a folder
that is not a skillloop checkpoint is refused, and a checkpoint is replaced in one atomic
swap (the new one is written beside it first)."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import uuid
from pathlib import Path

from training.checkpoint import METADATA_FILE

# written into a CRF checkpoint's folder, for whoever takes the model elsewhere
CRF_NOTE = """# A skillloop checkpoint trained with a CRF

The model folder is a plain transformers token-classification checkpoint, but its tag
scores were trained together with a CRF whose transition scores are in `skillloop.json`
under `"crf"` (`start`, `transitions`, `end`, in the order of `tags`). Decode it with
skillloop (`training.tagger.Tagger.load(folder, labels)`), or add those scores in a
Viterbi pass over the per-word log-softmax. A plain `transformers.pipeline(
"token-classification")` reads the emissions alone and finds far fewer spans (measured on
SkillSpan dev: span F1 0.22 against 0.51 with the CRF, docs/tagger.md). For a checkpoint
that works with argmax alone, train with `skillloop train --no-crf`.
"""


def is_checkpoint(folder: Path) -> bool:
    """A folder skillloop wrote (and may therefore replace)."""
    return (folder / METADATA_FILE).is_file() and (folder / "config.json").is_file()


def check_out_dir(out_dir: Path) -> None:
    """Refuse an output folder whose contents saving would destroy: anything but a missing
    or empty folder, or a skillloop checkpoint (which `save` replaces atomically)."""
    out_dir = Path(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder: choose another --out")
    if any(out_dir.iterdir()) and not is_checkpoint(out_dir):
        raise ValueError(
            f"{out_dir} is not empty and is not a skillloop checkpoint (no {METADATA_FILE}): "
            "it would be replaced; choose a new or empty folder for --out"
        )


def scratch_path(out_dir: Path, kind: str) -> Path:
    """A hidden name beside `out_dir` that only this save uses: a user's own `X.partial`
    or `X.old` next to `--out X` is never touched."""
    return out_dir.with_name(f".{out_dir.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def leftover_scratch(out_dir: Path) -> list[Path]:
    """What saves into `out_dir` that were killed half-way left beside it."""
    return sorted(out_dir.parent.glob(f".{out_dir.name}.partial-*"))


def save(model, tokenizer, out_dir: Path, metadata: dict) -> None:
    """Write the checkpoint beside `out_dir`, then swap it into place in one rename, so a
    reader never sees half a model and an existing checkpoint there is never missing. An
    `out_dir` that is a symbolic link saves into the folder it points to."""
    out_dir = Path(out_dir).resolve()
    check_out_dir(out_dir)
    partial = scratch_path(out_dir, "partial")
    partial.mkdir(parents=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    if metadata.get("crf"):
        (partial / "README.md").write_text(CRF_NOTE)
    if not out_dir.exists():
        partial.rename(out_dir)
        return
    if not _exchange(partial, out_dir):  # no renameat2: the old one is set aside first
        old = scratch_path(out_dir, "old")
        out_dir.rename(old)
        partial.rename(out_dir)
        partial = old
    shutil.rmtree(partial)  # now the previous checkpoint


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the
    system or the file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))
