"""Parse what ``lce_benchmark_model`` (TFLite's benchmark tool plus LCE ops) prints.

Format facts (TF ``BenchmarkModel``/``BenchmarkLoggingListener``, tsl
``StatsCalculator``; see ``../shared/reference/lce.md`` section 3.3): times are in
microseconds; the last result line is ``Inference timings in us: Init: ..., First
inference: ..., Warmup (avg): ..., Inference (avg): ...``; each phase prints a
stats line ``count=N first=... curr=... min=... max=... avg=... std=...``
(``count=0``, ``count=N curr=V (all same)`` and a trailing ``p5=.. median=..
p95=..`` also occur). Tolerated variations: an optional ``INFO: ``/``WARN: ``/
``ERROR: `` or glog-style prefix on every line, stdout and stderr interleaved,
scientific notation and ``nan``, and op-profile tables with or without a
``[start]`` column, tab-separated (or, in copies whose tabs became spaces,
separated by runs of spaces).

Example::

    from converters.benchmark_log import parse
    log = parse(open("bench.txt").read())
    print(log.inference.mean_us, [(op.node_type, op.avg_ms) for op in log.ops])
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from bnnprune_tf.errors import BenchmarkError

_PREFIX = re.compile(
    r"^(?:(?:INFO|WARN|WARNING|ERROR|VERBOSE|DEBUG)\s*:\s?"          # TFLite logging
    r"|[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+\s+\S+:\d+\]\s?)")      # glog
_FINAL = re.compile(
    r"Inference timings in us: Init: (\S+), First inference: (\S+), "
    r"Warmup \(avg\): (\S+), Inference \(avg\): (\S+)")
_STAT = re.compile(r"^count=(\d+)")
_PAIR = re.compile(r"(\w+)=(\S+)")
_PHASE = "Running benchmark for at least"
_REGULAR_PROFILE = "Operator-wise Profiling Info for Regular Benchmark Runs"


def _number(text: str) -> float:
    """``float`` of a printed value: handles ``1.24027e+06``, ``nan``, ``12.5%``, ``42ms``."""
    return float(text.strip().rstrip(",%").removesuffix("ms"))


@dataclass(frozen=True)
class Timing:
    """Summary of one phase's run times in microseconds; None where not printed."""

    count: int
    mean_us: float | None = None
    std_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    median_us: float | None = None
    first_us: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class OpTime:
    """One row of the per-op "Run Order" table (times in milliseconds)."""

    node_type: str
    name: str
    first_ms: float
    avg_ms: float
    percent: float
    times_called: int


@dataclass
class BenchmarkLog:
    """Everything parsed from one ``lce_benchmark_model`` run."""

    init_us: float
    first_inference_us: float
    warmup_avg_us: float
    inference_avg_us: float
    warmup: Timing | None = None
    inference: Timing | None = None
    ops: list[OpTime] = field(default_factory=list)
    ops_by_type: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def strip_prefix(line: str) -> str:
    """``line`` without a logging prefix and trailing whitespace."""
    return _PREFIX.sub("", line.rstrip("\r\n"), count=1).rstrip()


def parse_stats(line: str) -> Timing:
    """Parse a stats line such as ``count=50 first=31929 curr=31278 min=31138 ... std=260``.

    ``count=N curr=V (all same)`` gives V as mean, min and max.

    Example::

        parse_stats("count=3 curr=12 (all same)").mean_us   # 12.0
    """
    match = _STAT.match(line.strip())
    if not match:
        raise BenchmarkError(f"not a benchmark stats line (expected 'count=...'): {line!r}")
    values = {k: v for k, v in _PAIR.findall(line)}
    get = {k: _number(v) for k, v in values.items() if k != "count"}
    count = int(match.group(1))
    if "avg" not in get and "curr" in get:          # one run, or all runs the same
        return Timing(count, mean_us=get["curr"], std_us=0.0, min_us=get["curr"],
                      max_us=get["curr"], median_us=get["curr"], first_us=get["curr"])
    return Timing(count, mean_us=get.get("avg"), std_us=get.get("std"), min_us=get.get("min"),
                  max_us=get.get("max"), median_us=get.get("median"), first_us=get.get("first"))


def _cells(line: str) -> list[str]:
    parts = line.split("\t") if "\t" in line else re.split(r"\s{2,}", line)
    return [p.strip() for p in parts if p.strip()]


def _table(lines: list[str], start: int) -> tuple[list[dict], int]:
    """Rows of the table whose ``[column]`` header is at or after ``start``."""
    i = start
    while i < len(lines) and not lines[i].lstrip().startswith("["):
        i += 1
    if i == len(lines):
        return [], i
    header = [c.strip("[]").lower() for c in _cells(lines[i])]
    rows = []
    for line in lines[i + 1:]:
        if not line.strip() or line.lstrip().startswith("="):
            break
        cells = _cells(line)
        if len(cells) < len(header):
            break
        # a name containing the separator: keep the extra cells in the last column
        cells = cells[:len(header) - 1] + [" ".join(cells[len(header) - 1:])]
        rows.append(dict(zip(header, cells)))
    return rows, i + 1 + len(rows)


def _op_rows(rows: list[dict]) -> list[OpTime]:
    return [OpTime(node_type=r["node type"], name=r.get("name", ""),
                   first_ms=_number(r["first"]), avg_ms=_number(r["avg ms"]),
                   percent=_number(r["%"]), times_called=int(_number(r.get("times called", "1"))))
            for r in rows]


def _profile(lines: list[str]) -> tuple[list[OpTime], dict[str, dict]]:
    try:
        start = next(i for i, line in enumerate(lines) if _REGULAR_PROFILE in line)
    except StopIteration:
        return [], {}
    ops, by_type = [], {}
    for i in range(start, len(lines)):
        if "Run Order" in lines[i] and not ops:
            ops = _op_rows(_table(lines, i + 1)[0])
        elif "Summary by node type" in lines[i] and not by_type:
            for r in _table(lines, i + 1)[0]:
                by_type[r["node type"]] = {"count": int(_number(r["count"])),
                                           "avg_ms": _number(r["avg ms"]),
                                           "percent": _number(r["avg %"])}
    return ops, by_type


def parse(output: str) -> BenchmarkLog:
    """Parse the combined stdout and stderr of one ``lce_benchmark_model`` run.

    Raises:
        BenchmarkError: no ``Inference timings in us`` line (the run failed or this
            is not benchmark output); the message quotes the error lines found.

    Example::

        log = parse(subprocess.run([...], capture_output=True, text=True).stdout)
        print(log.inference_avg_us)
    """
    lines = [strip_prefix(line) for line in output.splitlines()]
    final = None
    for line in lines:
        match = _FINAL.search(line)
        if match:
            final = [_number(v) for v in match.groups()]
    if final is None:
        errors = [line for line in output.splitlines()
                  if re.search(r"error|fail|abort|not found|unknown", line, re.I)]
        tail = "\n".join((errors or [line for line in lines if line])[-8:])
        raise BenchmarkError(
            "could not parse lce_benchmark_model output: no 'Inference timings in us' line. "
            "The run probably failed, or the binary is not lce_benchmark_model; it printed:\n"
            + (tail or "(nothing)"))
    phases = []
    for i, line in enumerate(lines):
        if line.startswith(_PHASE):
            stat = next((s for s in lines[i + 1:i + 4] if _STAT.match(s)), None)
            phases.append(parse_stats(stat) if stat else None)
    warmup = phases[0] if len(phases) > 1 else None
    inference = phases[-1] if phases else None
    ops, by_type = _profile(lines)
    return BenchmarkLog(init_us=final[0], first_inference_us=final[1], warmup_avg_us=final[2],
                        inference_avg_us=final[3], warmup=warmup, inference=inference,
                        ops=ops, ops_by_type=by_type)


def is_missing(value: float | None) -> bool:
    """True for None or nan (a phase that had no runs)."""
    return value is None or math.isnan(value)
