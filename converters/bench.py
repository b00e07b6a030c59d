"""Latency of LCE flatbuffers: here (LCE interpreter) or on a device (``lce_benchmark_model``).

Both return :class:`BenchResult` lists with the same fields. On the host, every
model x kernel configuration is timed round-robin in one process (the start of
each round rotates), so drift on a shared machine hits all of them alike; use
host numbers as ratios only: the x86 bconv kernels are portable C++, not the
ARM assembly a phone or Raspberry Pi runs (``../shared/reference/lce.md`` 4.2).

On a device (``ssh://[user@]host[:port]`` or ``adb[:serial]``) the model is
copied over and ``lce_benchmark_model`` runs with explicit flags, once per
kernel; with two models the runs alternate A, B per kernel.

Example::

    from converters import bench
    results = bench.bench_host({"base": base_bytes, "pruned": pruned_bytes}, runs=50)
    print(bench.to_markdown(results))
    print(bench.ratio(bench.find(results, "pruned", "default"),
                      bench.find(results, "base", "default")))
    remote = bench.bench_device("model.tflite", "ssh://pi@raspberrypi", profile=True)
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bnnprune_tf.errors import BenchmarkError, ConversionError
from bnnprune_tf.reporting import markdown_table
from converters import benchmark_log, lce
from converters.benchmark_log import OpTime, Timing

KERNELS = lce.KERNELS


@dataclass
class BenchResult:
    """Timing of one model with one bconv kernel on one device (microseconds)."""

    model: str
    device: str                 # "host", "ssh://user@host" or "adb:serial"
    kernel: str                 # "default" or "indirect_bgemm"
    threads: int
    runs: int
    warmup: int
    timing: Timing
    ops: list[OpTime] = field(default_factory=list)     # per-op profile (device runs)
    samples_us: list[float] = field(default_factory=list)   # every timed run (host runs)

    def to_dict(self, with_samples: bool = False) -> dict:
        out = asdict(self)
        if not with_samples:
            out.pop("samples_us")
        return out


def _check_args(runs: int, warmup: int, threads: int, kernels):
    unknown = [k for k in kernels if k not in KERNELS]
    if unknown or not kernels:
        raise BenchmarkError(f"unknown kernels {unknown or kernels}: use one or both of "
                             f"{', '.join(KERNELS)}")
    if runs < 1 or warmup < 0 or threads < 1:
        raise BenchmarkError(f"need runs >= 1, warmup >= 0 and threads >= 1; got runs={runs}, "
                             f"warmup={warmup}, threads={threads}")


def _load(model: bytes | str | os.PathLike) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    path = Path(model)
    if not path.is_file():
        raise BenchmarkError(f"model file {path} not found: pass a .tflite file made by "
                             "`bnnprune convert` or converters.lce.convert")
    return path.read_bytes()


def _summary(samples: list[float]) -> Timing:
    q1, q2, q3 = np.percentile(samples, [25, 50, 75])
    return Timing(count=len(samples), mean_us=float(np.mean(samples)),
                  std_us=float(np.std(samples)), min_us=float(min(samples)),
                  max_us=float(max(samples)), median_us=float(q2), first_us=samples[0])


def bench_host(models: dict[str, bytes | str | os.PathLike], kernels=KERNELS, runs: int = 50,
               warmup: int = 5, threads: int = 1, seed: int = 0) -> list[BenchResult]:
    """Time each model with each kernel in the LCE interpreter, interleaved round-robin.

    Args:
        models: name -> flatbuffer bytes or ``.tflite`` path.
        kernels: any of ``"default"`` and ``"indirect_bgemm"``.
        runs, warmup: timed and untimed invocations per configuration.
        seed: of the random input (uniform in [-1, 1]).

    Example::

        results = bench_host({"mnist": "model.tflite"}, runs=100)
        print({r.kernel: r.timing.median_us for r in results})
    """
    _check_args(runs, warmup, threads, kernels)
    if not models:
        raise BenchmarkError("no model to benchmark")
    configs = []
    rng = np.random.default_rng(seed)
    for name, model in models.items():
        flatbuffer = _load(model)
        for kernel in kernels:
            try:
                interp = lce.interpreter(flatbuffer, kernel, threads)
            except ConversionError as e:
                raise BenchmarkError(f"cannot benchmark {name}: {e}") from e
            x = rng.uniform(-1, 1, interp.input_shapes[0]).astype(interp.input_types[0])
            configs.append((name, kernel, interp.interpreter, [x]))
    for _, _, raw, inputs in configs:
        for _ in range(warmup):
            raw.predict(inputs)
    samples = [[] for _ in configs]
    order = list(range(len(configs)))
    for r in range(runs):
        for i in order[r % len(order):] + order[:r % len(order)]:
            raw, inputs = configs[i][2], configs[i][3]
            start = time.perf_counter_ns()
            raw.predict(inputs)
            samples[i].append((time.perf_counter_ns() - start) / 1e3)
    return [BenchResult(model=name, device="host", kernel=kernel, threads=threads, runs=runs,
                        warmup=warmup, timing=_summary(s), samples_us=s)
            for (name, kernel, _, _), s in zip(configs, samples)]


def find(results: list[BenchResult], model: str, kernel: str) -> BenchResult:
    """The result of ``model`` with ``kernel`` in ``results``.

    Example::

        find(bench_host({"m": path}), "m", "default").timing.median_us
    """
    for r in results:
        if r.model == model and r.kernel == kernel:
            return r
    raise BenchmarkError(f"no result for model {model!r} with kernel {kernel!r}; have "
                         f"{sorted({(r.model, r.kernel) for r in results})}")


def ratio(a: BenchResult, b: BenchResult) -> dict:
    """Time ratio ``a / b`` (< 1: ``a`` is faster).

    When both were timed in the same rounds (host) it is the median of the
    per-round ratios, with their 25th and 75th percentiles; otherwise the ratio
    of medians (or of means where the device printed no median).

    Example::

        results = bench_host({"pruned": p, "base": b})
        ratio(find(results, "pruned", "default"), find(results, "base", "default"))["ratio"]
    """
    if a.samples_us and len(a.samples_us) == len(b.samples_us):
        per_round = np.array(a.samples_us) / np.array(b.samples_us)
        p25, p50, p75 = np.percentile(per_round, [25, 50, 75])
        return {"ratio": float(p50), "p25": float(p25), "p75": float(p75),
                "method": "median of per-round ratios"}
    key = "median_us" if a.timing.median_us and b.timing.median_us else "mean_us"
    return {"ratio": getattr(a.timing, key) / getattr(b.timing, key),
            "method": f"ratio of {key.removesuffix('_us')}s"}


def rows(results: list[BenchResult]) -> dict[str, dict]:
    """Latency table rows: median, quartile spread (host) or std (device), in milliseconds."""
    out = {}
    for r in results:
        t = r.timing
        if r.samples_us:
            q1, q3 = np.percentile(r.samples_us, [25, 75])
            spread = f"{q1 / 1e3:.3f}-{q3 / 1e3:.3f} (IQR)"
        else:
            spread = "" if t.std_us is None else f"+-{t.std_us / 1e3:.3f} (std)"
        out[f"{r.model} | {r.device} | {r.kernel}"] = {
            "threads": r.threads, "runs": t.count,
            "median ms": "n/a" if t.median_us is None else f"{t.median_us / 1e3:.3f}",
            "spread ms": spread, "mean ms": f"{t.mean_us / 1e3:.3f}"}
    return out


def to_markdown(results: list[BenchResult]) -> str:
    """:func:`rows` as a markdown table."""
    return markdown_table(rows(results), "model | device | kernel")


def op_rows(result: BenchResult, top: int = 15) -> dict[str, dict]:
    """The slowest ops of a device run's per-op profile as table rows."""
    return {f"{op.node_type} | {op.name}": {"avg ms": f"{op.avg_ms:.3f}",
                                            "%": f"{op.percent:.1f}"}
            for op in sorted(result.ops, key=lambda o: -o.avg_ms)[:top]}


def ops_to_markdown(result: BenchResult, top: int = 15) -> str:
    """:func:`op_rows` as a markdown table ("" without a profile)."""
    if not result.ops:
        return ""
    return markdown_table(op_rows(result, top), f"op ({result.model}, {result.kernel}) | name")


# ---------------------------------------------------------------- devices

_SSH = re.compile(r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+)(?::(?P<port>\d+))?/?$")


@dataclass(frozen=True)
class Device:
    """Where ``lce_benchmark_model`` runs: ``ssh://[user@]host[:port]`` or ``adb[:serial]``."""

    spec: str
    kind: str           # "ssh" or "adb"
    address: str        # user@host, or the adb serial ("" = the only device)
    port: int | None = None

    @property
    def default_binary(self) -> str:
        if self.kind == "ssh":
            return "lce_benchmark_model"
        return "/data/local/tmp/lce_benchmark_model"

    @property
    def default_dir(self) -> str:
        return "/tmp/bnnprune-bench" if self.kind == "ssh" else "/data/local/tmp/bnnprune-bench"

    def _base(self, tool: str) -> list[str]:
        if self.kind == "adb":
            return ["adb"] + (["-s", self.address] if self.address else [])
        port = ["-p" if tool == "ssh" else "-P", str(self.port)] if self.port else []
        return [tool, "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", *port]

    def _call(self, argv: list[str], timeout: float) -> tuple[int, str]:
        try:
            done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout)
        except FileNotFoundError:
            raise BenchmarkError(f"{argv[0]!r} is not installed on this machine: install it "
                                 f"(openssh-client / android-sdk-platform-tools) to use "
                                 f"--device {self.spec}") from None
        except subprocess.TimeoutExpired:
            raise BenchmarkError(f"{' '.join(argv[:4])} ... did not finish within {timeout:.0f} s "
                                 f"on {self.spec}: check the device or raise the timeout") from None
        return done.returncode, done.stdout

    def shell(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """Run ``command`` in the device's shell; returns (exit status, stdout+stderr)."""
        if self.kind == "adb":
            return self._call(self._base("adb") + ["shell", command], timeout)
        return self._call(self._base("ssh") + [self.address, command], timeout)

    def push(self, local: Path, remote: str, timeout: float = 120) -> None:
        """Copy ``local`` to the device path ``remote``."""
        if self.kind == "adb":
            argv = self._base("adb") + ["push", str(local), remote]
        else:
            argv = self._base("scp") + [str(local), f"{self.address}:{remote}"]
        rc, out = self._call(argv, timeout)
        if rc != 0:
            raise self.unreachable(out)

    def unreachable(self, output: str) -> BenchmarkError:
        how = ("check the address, that `ssh -o BatchMode=yes` logs in without a password "
               "(ssh-copy-id), and the network" if self.kind == "ssh" else
               "check `adb devices` lists it (USB debugging on, authorized)")
        return BenchmarkError(f"cannot reach {self.spec}: {output.strip()[-300:] or 'no output'}."
                              f" Fix: {how}")


def parse_device(spec: str) -> Device:
    """``ssh://[user@]host[:port]`` or ``adb`` / ``adb:SERIAL`` as a :class:`Device`.

    Example::

        parse_device("ssh://pi@192.168.1.7:2222").port    # 2222
    """
    match = _SSH.match(spec)
    if match:
        user, host, port = match.group("user", "host", "port")
        return Device(spec, "ssh", f"{user}@{host}" if user else host, int(port) if port else None)
    if spec == "adb" or (spec.startswith("adb:") and len(spec) > 4):
        return Device(spec, "adb", spec[4:])
    raise BenchmarkError(f"unknown device {spec!r}: use ssh://[user@]host[:port], adb or "
                         "adb:SERIAL (from `adb devices`)")


def benchmark_command(binary: str, graph: str, kernel: str, runs: int, warmup: int,
                      threads: int, profile: bool, xnnpack: bool) -> str:
    """The ``lce_benchmark_model`` command line, every flag explicit.

    Example::

        benchmark_command("lce_benchmark_model", "/tmp/m.tflite", "default", 50, 5, 1,
                          False, False)
    """
    flags = [f"--graph={graph}", f"--num_threads={threads}", f"--num_runs={runs}",
             f"--warmup_runs={warmup}",
             f"--use_indirect_bgemm={'true' if kernel == 'indirect_bgemm' else 'false'}",
             f"--use_xnnpack={'true' if xnnpack else 'false'}"]
    if profile:
        flags.append("--enable_op_profiling=true")
    return " ".join(shlex.quote(v) for v in [binary, *flags]) + " 2>&1"


def _missing_binary(device: str, binary: str) -> BenchmarkError:
    return BenchmarkError(
        f"lce_benchmark_model not found on {device} at {binary!r}. Fix: copy the release binary "
        "for the device (lce_benchmark_model_aarch64 or _android_arm64 from "
        "github.com/larq/compute-engine/releases) there, chmod +x it, or pass its path with "
        "--binary")


def bench_device(models: dict[str, str | os.PathLike], device: str, kernels=KERNELS,
                 runs: int = 50, warmup: int = 5, threads: int = 1, profile: bool = False,
                 xnnpack: bool = False, binary: str | None = None,
                 remote_dir: str | None = None, timeout: float = 600) -> list[BenchResult]:
    """Run ``lce_benchmark_model`` on ``device`` for every model and kernel.

    Args:
        models: name -> local ``.tflite`` path; with two, runs alternate per kernel.
        device: ``ssh://[user@]host[:port]``, ``adb`` or ``adb:SERIAL``.
        profile: add ``--enable_op_profiling=true`` and parse the per-op table.
        xnnpack: ``--use_xnnpack``; off by default so that float ops show up per op
            (as in the host interpreter).
        binary: path of ``lce_benchmark_model`` on the device (default: on ``PATH``
            for ssh, ``/data/local/tmp/lce_benchmark_model`` for adb).

    Raises:
        BenchmarkError: unreachable device, missing binary, a failed run or
            output that does not parse.

    Example::

        bench_device({"m": "model.tflite"}, "adb", kernels=["indirect_bgemm"], profile=True)
    """
    _check_args(runs, warmup, threads, kernels)
    target = parse_device(device)
    binary = binary or target.default_binary
    remote_dir = remote_dir or target.default_dir
    paths = {name: Path(path) for name, path in models.items()}
    for path in paths.values():
        _load(path)
    rc, out = target.shell(f"mkdir -p {shlex.quote(remote_dir)}")
    if rc != 0:
        raise target.unreachable(out)
    rc, out = target.shell(f"test -x {shlex.quote(binary)} || command -v {shlex.quote(binary)}")
    if rc != 0:
        raise _missing_binary(device, binary)
    remote = {}
    for name, path in paths.items():
        remote[name] = f"{remote_dir}/{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{path.name}"
        target.push(path, remote[name])
    results = []
    for kernel in kernels:
        for name in paths:
            command = benchmark_command(binary, remote[name], kernel, runs, warmup, threads,
                                        profile, xnnpack)
            rc, out = target.shell(command, timeout)
            if rc == 127:
                raise _missing_binary(device, binary)
            if rc != 0:
                raise BenchmarkError(f"lce_benchmark_model failed on {device} (exit {rc}) for "
                                     f"{name} with {kernel}: {out.strip()[-500:]}")
            log = benchmark_log.parse(out)
            timing = log.inference
            if timing is None or benchmark_log.is_missing(timing.mean_us):
                timing = Timing(count=timing.count if timing else 0,
                                mean_us=log.inference_avg_us)
            if benchmark_log.is_missing(timing.mean_us):
                raise BenchmarkError(f"lce_benchmark_model made no timed run of {name} on "
                                     f"{device} (Inference (avg): nan): raise --runs")
            results.append(BenchResult(model=name, device=device, kernel=kernel,
                                       threads=threads, runs=runs, warmup=warmup,
                                       timing=timing, ops=log.ops))
    return results
