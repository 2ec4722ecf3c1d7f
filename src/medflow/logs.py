"""Per-rule logging: everything a rule's Python code says (logging, warnings, tqdm bars) goes to its log."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def rule_log(path: str | Path | None) -> Iterator[None]:
    """Send logging, warnings and stderr (where tqdm draws) to ``path`` for the duration of a rule.

    The exception that ends a failed rule is logged with its traceback before it propagates, so the
    log tells the whole story when Snakemake points the user at it.
    """
    if path is None:
        logging.basicConfig(level=logging.INFO, format=FORMAT)
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8", buffering=1) as stream:
        saved = sys.stderr
        sys.stderr = stream
        logging.basicConfig(level=logging.INFO, format=FORMAT, stream=stream, force=True)
        logging.captureWarnings(True)
        try:
            yield
        except BaseException:
            logging.getLogger("medflow").exception("rule failed")
            raise
        finally:
            logging.captureWarnings(False)
            sys.stderr = saved


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """A tqdm bar that suits where stderr goes: on a terminal it redraws in place and vanishes when
    done; in a rule's log file it redraws at most every 10 s and ends its line, so log records
    that follow start on a line of their own."""
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    kwargs.setdefault("leave", not tty)
    kwargs.setdefault("mininterval", 1.0 if tty else 10.0)
    return tqdm(iterable, **kwargs)
