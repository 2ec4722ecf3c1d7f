"""Entry point of one data-parallel rank: ``torchrun ... -m medflow.train.rank JOB_DIR``
(started by :func:`medflow.train.distributed.launch`)."""

import logging
import os
import sys
from pathlib import Path

from medflow.logs import FORMAT
from medflow.train.distributed import run_rank

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=f"rank {os.environ.get('RANK', '?')} {FORMAT}")
    run_rank(Path(sys.argv[1]))
