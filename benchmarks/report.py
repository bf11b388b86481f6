"""Pure helpers of ``benchmarks.run``: FLOP counts, the CPU's peak, medians and the table.

FLOPs count convolutions and matmuls only, 2 per multiply-accumulate (BN, ReLU, additions and
the optimizer's element-wise updates are left out: they are memory-bound and small).
"""

import math
import re
import statistics
from collections.abc import Iterable, Sequence

# FP32 FLOP per cycle and core with AVX2: 2 FMA units x 8 floats x 2 (multiply and add).
FLOPS_PER_CYCLE = 32


def layer_flops(out_shape: Sequence[int], weight_shape: Sequence[int]) -> int:
    """A convolution (weight O x I/groups x kh x kw) or dense layer (O x I): per output element
    ``prod(weight_shape[1:])`` multiply-accumulates."""
    return 2 * math.prod(out_shape) * math.prod(weight_shape[1:])


def forward_flops(layers: Iterable[tuple[Sequence[int], Sequence[int]]]) -> int:
    """A forward pass: the sum over its ``(out_shape, weight_shape)`` layers."""
    return sum(layer_flops(out, weight) for out, weight in layers)


def step_flops(encoder_flops: int, batch: int, dim: int, queue: int) -> int:
    """One MoCo training step of ``batch`` images, ``encoder_flops`` per image: the query side
    (encoder_q forward plus the N x dim x (1 + K) logits) counts 3 times (forward and backward
    = 2 x forward), encoder_k once (forward only). So about 4 x the forward."""
    query = batch * encoder_flops + 2 * batch * dim * (queue + 1)
    return 3 * query + batch * encoder_flops


def knn_flops(queries: int, bank: int, dim: int) -> int:
    """The kNN's similarity matmul (queries x dim times dim x bank); the top-k is not counted."""
    return 2 * queries * bank * dim


def cpu_mhz(cpuinfo: str, lscpu: str = "") -> float:
    """The clock: the mean "cpu MHz" of /proc/cpuinfo, else lscpu's "CPU max MHz"; 0 if neither."""
    values = [float(v) for v in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.M)]
    if values:
        return statistics.fmean(values)
    found = re.search(r"^CPU max MHz:\s*([\d.]+)", lscpu, re.M)
    return float(found.group(1)) if found else 0.0


def peak_flops(cores: int, mhz: float) -> float:
    """FP32 peak in FLOP/s: cores x clock x FLOP per cycle."""
    return cores * mhz * 1e6 * FLOPS_PER_CYCLE


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of the rounds' values."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def speed_ratio(ours: float, theirs: float, unit: str) -> float:
    """ours / theirs as speed: for times ("s") that is theirs / ours; > 1 means ours is faster."""
    return theirs / ours if unit == "s" else ours / theirs


def monitor_share(eval_img_s: float, step_img_s: float, train=50_000, test=10_000) -> dict:
    """Seconds of the kNN monitor (extracting ``train`` + ``test`` images) and of an epoch's
    training (``train`` images), and the monitor's share of the two together."""
    monitor, epoch = (train + test) / eval_img_s, train / step_img_s
    return {"monitor_s": monitor, "train_s": epoch, "share": monitor / (monitor + epoch)}


def _number(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cell(stats: dict) -> str:
    """``median (min-max)`` with precision to suit the magnitude; ``-`` without ``stats``."""
    if not stats:
        return "-"
    digits = 2 if stats["median"] < 10 else 1 if stats["median"] < 100 else 0
    low, high = _number(stats["min"], digits), _number(stats["max"], digits)
    return f"{_number(stats['median'], digits)} ({low}-{high})"


HEADER = "what", "batch", "unit", "ours (min-max)", "theirs (min-max)", "ours/theirs"
HEADER += "RSS MiB", "compile s", "% of peak"
WIDTHS = 43, 6, 6, 22, 22, 12, 14, 12, 12
PAIRS = ("rss_mib", 0), ("compile_s", 1), ("peak_pct", 1)  # ours / theirs, digits


def format_table(rows: Sequence[dict]) -> str:
    """One line per row: ``what``, ``batch``, ``unit``, ``ours``/``theirs`` (spread, rss_mib,
    compile_s, peak_pct) and ``ratio``; a missing value prints as ``-``."""
    lines = [HEADER]
    for row in rows:
        sides = [row.get("ours") or {}, row.get("theirs") or {}]
        pairs = [" / ".join(_number(s.get(key), d) for s in sides) for key, d in PAIRS]
        first = row["what"], str(row.get("batch") or "-"), row["unit"], *map(_cell, sides)
        lines.append((*first, _number(row.get("ratio"), 2), *pairs))
    return "\n".join("".join(f"{c:<{w}}" for c, w in zip(line, WIDTHS)).rstrip() for line in lines)
