"""``python tests/faulty_main.py ARGS``: main.py with the faults of ``MOCO_FAULT`` installed."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from faults import Faults  # noqa: E402

import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main.main(callbacks=[Faults()]))
