"""Quiet third-party libraries in a run (our own progress bars stay)."""

from __future__ import annotations

import os


def quiet_libraries() -> None:
    """Silence transformers' load reports and progress bars (our own bars stay)."""
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*")
    import transformers

    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
