"""What the equivalence tests share: the relative difference they bound, and the largest ones
measured in a module, printed at its end (visible with ``pytest -s``)."""

import numpy as np


def rel_diff(ours, reference) -> float:
    """``max |ours - reference| / max |reference|`` (absolute if the reference is all zero)."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-12))


class Measured(dict):
    """The largest value recorded under each name."""

    def record(self, what: str, value: float) -> float:
        self[what] = max(self.get(what, 0.0), value)
        return value

    def report(self, title: str = "ours vs reference", width: int = 55) -> None:
        if self:
            print(f"\nmeasured max differences ({title}):")
            for key, value in self.items():
                print(f"  {key:<{width}} {value:.2g}")
