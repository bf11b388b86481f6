"""The one place that reports progress: a tqdm bar on a terminal, log lines elsewhere."""

import logging
import sys
import time
from typing import Optional

from tqdm import tqdm

logger = logging.getLogger("moco")


def setup_logging(log_file: Optional[str] = None) -> logging.Logger:
    """Sends ``moco`` log records to stderr and, if given, to ``log_file``."""
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    logger.propagate = False
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    return logger


class Progress:
    """Per-epoch progress of ``total`` steps of ``batch_size`` images: loss, lr, img/s and ETA.
    A bar if ``interactive`` (default: stderr is a terminal), else a log line every ``log_every``
    steps and at the end."""

    def __init__(self, total, desc, batch_size, interactive=None, log_every=20):
        self.total, self.desc, self.batch_size, self.log_every = total, desc, batch_size, log_every
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True) if self.interactive else None
        self.start, self.step = time.perf_counter(), 0

    def update(self, **metrics: float) -> None:
        """Advances one step; ``metrics`` (e.g. loss, lr) are shown beside the rate."""
        self.step += 1
        elapsed = time.perf_counter() - self.start
        rate = self.step * self.batch_size / max(elapsed, 1e-9)
        shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        if self.bar is not None:
            self.bar.set_postfix_str(f"{shown} {rate:.1f} img/s")
            self.bar.update(1)
        elif self.step % self.log_every == 0 or self.step == self.total:
            eta = (self.total - self.step) * elapsed / self.step
            line = "%s step %d/%d %s %.1f img/s eta %.0fs"
            logger.info(line, self.desc, self.step, self.total, shown, rate, eta)

    def close(self) -> float:
        if self.bar is not None:
            self.bar.close()
        return time.perf_counter() - self.start
