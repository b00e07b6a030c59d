"""converters.bench: host timing with the LCE interpreter, the device runner and `bnnprune bench`.

The device tests run the real runner end to end against STAND-INS written by
these tests: `ssh`, `scp` and `adb` scripts that run commands locally, and a
`lce_benchmark_model` stand-in script that prints output in the documented
format (it measures nothing). No real device is involved.
"""

import json
import os
import stat
import textwrap

import bnnprune_tf  # noqa: F401
import pytest

from bnnprune_tf import files, models
from bnnprune_tf.errors import BenchmarkError
from converters import bench, lce
from pipelines import cli


@pytest.fixture(scope="module")
def tflites(tmp_path_factory):
    """A small and an 8x wider mnist_bnn as .tflite files."""
    out = tmp_path_factory.mktemp("tflite")
    paths = {}
    for name, width in (("small", 0.125), ("wide", 1.0)):
        model = models.build("mnist_bnn", (28, 28, 1), 10, width=width)
        paths[name] = files.write_bytes(out / f"{name}.tflite", lce.convert(model))
    return paths


def test_host_bench_interleaves_both_kernels_and_sees_the_wider_model_slower(tflites):
    results = bench.bench_host({"small": tflites["small"], "wide": tflites["wide"]},
                               runs=15, warmup=2)
    assert [(r.model, r.kernel) for r in results] == [
        ("small", "default"), ("small", "indirect_bgemm"),
        ("wide", "default"), ("wide", "indirect_bgemm")]
    for r in results:
        assert r.device == "host" and r.timing.count == 15 and len(r.samples_us) == 15
        assert r.timing.min_us <= r.timing.median_us <= r.timing.max_us
    for kernel in bench.KERNELS:
        rel = bench.ratio(bench.find(results, "wide", kernel), bench.find(results, "small", kernel))
        assert rel["method"] == "median of per-round ratios"
        assert rel["p25"] <= rel["ratio"] <= rel["p75"]
        assert rel["ratio"] > 1.5        # 8x the channels, measured side by side
    table = bench.to_markdown(results)
    assert table.count("| host |") == 4 and "(IQR)" in table


def test_host_bench_rejects_bad_arguments(tflites, tmp_path):
    with pytest.raises(BenchmarkError, match="unknown kernels"):
        bench.bench_host({"m": tflites["small"]}, kernels=["fast"])
    with pytest.raises(BenchmarkError, match="runs >= 1"):
        bench.bench_host({"m": tflites["small"]}, runs=0)
    with pytest.raises(BenchmarkError, match="not found"):
        bench.bench_host({"m": tmp_path / "missing.tflite"})
    with pytest.raises(BenchmarkError, match="not a TFLite flatbuffer"):
        bench.bench_host({"m": b"garbage bytes, not a model"})


def test_parse_device():
    d = bench.parse_device("ssh://pi@raspberrypi:2222")
    assert (d.kind, d.address, d.port) == ("ssh", "pi@raspberrypi", 2222)
    assert bench.parse_device("ssh://box").address == "box"
    assert bench.parse_device("adb").address == ""
    assert bench.parse_device("adb:R58M12").address == "R58M12"
    for bad in ("telnet://box", "ssh://", "adb:", "pi@box"):
        with pytest.raises(BenchmarkError, match="unknown device"):
            bench.parse_device(bad)


def test_benchmark_command_has_explicit_flags():
    cmd = bench.benchmark_command("/data/local/tmp/lce_benchmark_model", "/x/m.tflite",
                                  "indirect_bgemm", 30, 3, 2, True, False)
    assert cmd.split()[1:8] == ["--graph=/x/m.tflite", "--num_threads=2", "--num_runs=30",
                                "--warmup_runs=3", "--use_indirect_bgemm=true",
                                "--use_xnnpack=false", "--enable_op_profiling=true"]


# ---------------------------------------------------------------- stand-ins

def _script(path, body):
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    """Stand-in ssh/scp/adb (run locally, log their arguments) on PATH, and a
    stand-in lce_benchmark_model that prints documented-format output."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    _script(bin_dir / "ssh", f"""\
        # stand-in for ssh: log the call, run the command here
        echo "ssh $*" >> {log}
        while [ "$1" = "-o" ] || [ "$1" = "-p" ]; do shift 2; done
        case "$1" in *unreachable*) echo "ssh: Could not resolve hostname $1" >&2; exit 255;; esac
        shift
        exec sh -c "$*"
        """)
    _script(bin_dir / "scp", f"""\
        # stand-in for scp: copy locally
        echo "scp $*" >> {log}
        while [ "$1" = "-o" ] || [ "$1" = "-P" ]; do shift 2; done
        exec cp "$1" "${{2#*:}}"
        """)
    _script(bin_dir / "adb", f"""\
        # stand-in for adb: push = cp, shell = sh -c
        echo "adb $*" >> {log}
        if [ "$1" = "-s" ]; then
            case "$2" in offline*) echo "adb: device '$2' not found" >&2; exit 1;; esac
            shift 2
        fi
        if [ "$1" = "push" ]; then exec cp "$2" "$3"; fi
        shift
        exec sh -c "$*"
        """)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    tool = _script(tmp_path / "lce_benchmark_model_stand_in", f"""\
        # STAND-IN for lce_benchmark_model written by tests/test_bench.py: it checks the
        # model file exists and prints output in the documented format; it times nothing.
        echo "tool $*" >> {log}
        graph=""; avg=800; runs=50
        for a in "$@"; do
          case "$a" in
            --graph=*) graph="${{a#--graph=}}";;
            --use_indirect_bgemm=true) avg=200;;
            --num_runs=*) runs="${{a#--num_runs=}}";;
          esac
        done
        case "$graph" in *other*) avg=$((avg * 2));; esac
        if [ ! -f "$graph" ]; then echo "ERROR: Could not open '$graph'." >&2; exit 1; fi
        echo "INFO: STARTING!"
        echo "INFO: Loaded model $graph"
        echo "INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds."
        echo "INFO: count=3 curr=$avg (all same)"
        echo "INFO: Running benchmark for at least $runs iterations and at least 1 seconds but terminate if exceeding 150 seconds."
        echo "INFO: count=$runs first=$avg curr=$avg min=$avg max=$avg avg=$avg std=0 p5=$avg median=$avg p95=$avg" >&2
        case "$*" in *--enable_op_profiling=true*)
          echo "INFO: Operator-wise Profiling Info for Regular Benchmark Runs:"
          echo "INFO: ============================== Run Order =============================="
          printf 'INFO: \\t[node type]\\t[first]\\t[avg ms]\\t[%%]\\t[cdf%%]\\t[mem KB]\\t[times called]\\t[Name]\\n'
          printf 'INFO: \\tLceBconv2d\\t0.500\\t0.400\\t80.000%%\\t80.000%%\\t0.000\\t1\\t[conv]:3\\n'
          printf 'INFO: \\tCONV_2D\\t0.120\\t0.100\\t20.000%%\\t100.000%%\\t0.000\\t1\\t[stem]:1\\n'
          echo "INFO: ";;
        esac
        echo "INFO: Inference timings in us: Init: 900, First inference: $avg, Warmup (avg): $avg, Inference (avg): $avg"
        """)
    return {"tool": tool, "log": log, "remote": tmp_path / "remote"}


def test_device_runner_over_ssh_end_to_end(tflites, stand_ins):
    results = bench.bench_device({"small": tflites["small"], "other": tflites["wide"]},
                                 "ssh://pi@box:2222", runs=20, warmup=2, profile=True,
                                 binary=str(stand_ins["tool"]), remote_dir=str(stand_ins["remote"]))
    assert [(r.model, r.kernel) for r in results] == [
        ("small", "default"), ("other", "default"),          # A, B alternate per kernel
        ("small", "indirect_bgemm"), ("other", "indirect_bgemm")]
    assert [r.timing.median_us for r in results] == [800, 1600, 200, 400]
    assert all(r.device == "ssh://pi@box:2222" and r.timing.count == 20 for r in results)
    assert [(o.node_type, o.avg_ms) for o in results[0].ops] == [("LceBconv2d", 0.4),
                                                                  ("CONV_2D", 0.1)]
    rel = bench.ratio(results[0], results[1])
    assert rel == {"ratio": 0.5, "method": "ratio of medians"}
    assert (stand_ins["remote"] / "small-small.tflite").read_bytes() == tflites["small"].read_bytes()
    calls = stand_ins["log"].read_text().splitlines()
    assert any(c.startswith("ssh -o BatchMode=yes -o ConnectTimeout=10 -p 2222 pi@box") for c in calls)
    assert any(c.startswith("scp -o BatchMode=yes -o ConnectTimeout=10 -P 2222 ") for c in calls)
    tool_calls = [c for c in calls if c.startswith("tool ")]
    assert len(tool_calls) == 4
    assert "--num_threads=1 --num_runs=20 --warmup_runs=2" in tool_calls[0]
    assert "--use_xnnpack=false --enable_op_profiling=true" in tool_calls[0]
    assert "LceBconv2d" in bench.ops_to_markdown(results[0])


def test_device_runner_over_adb(tflites, stand_ins):
    results = bench.bench_device({"m": tflites["small"]}, "adb:emulator-5554",
                                 kernels=["indirect_bgemm"], runs=5,
                                 binary=str(stand_ins["tool"]), remote_dir=str(stand_ins["remote"]))
    assert len(results) == 1 and results[0].timing.mean_us == 200 and results[0].ops == []
    assert "adb -s emulator-5554 push" in stand_ins["log"].read_text()


def test_device_errors_are_clear(tflites, stand_ins, tmp_path):
    kw = dict(remote_dir=str(stand_ins["remote"]), runs=5)
    with pytest.raises(BenchmarkError, match="cannot reach ssh://pi@unreachable.invalid.*ssh-copy-id"):
        bench.bench_device({"m": tflites["small"]}, "ssh://pi@unreachable.invalid",
                           binary=str(stand_ins["tool"]), **kw)
    with pytest.raises(BenchmarkError, match="cannot reach adb:offline-1.*adb devices"):
        bench.bench_device({"m": tflites["small"]}, "adb:offline-1",
                           binary=str(stand_ins["tool"]), **kw)
    with pytest.raises(BenchmarkError, match="lce_benchmark_model not found on ssh://box.*--binary"):
        bench.bench_device({"m": tflites["small"]}, "ssh://box",
                           binary=str(tmp_path / "no_such_binary"), **kw)
    garbage = _script(tmp_path / "garbage_tool", "echo 'Segmentation fault (core dumped)'\n")
    with pytest.raises(BenchmarkError, match="(?s)could not parse.*Segmentation fault"):
        bench.bench_device({"m": tflites["small"]}, "ssh://box", binary=str(garbage), **kw)
    failing = _script(tmp_path / "failing_tool", "echo 'ERROR: bad flag' >&2; exit 1\n")
    with pytest.raises(BenchmarkError, match=r"(?s)failed on ssh://box \(exit 1\).*bad flag"):
        bench.bench_device({"m": tflites["small"]}, "ssh://box", binary=str(failing), **kw)


def test_missing_ssh_client_is_a_clear_error(tflites, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))          # no ssh anywhere
    with pytest.raises(BenchmarkError, match="'ssh' is not installed"):
        bench.bench_device({"m": tflites["small"]}, "ssh://box")


def test_cli_bench_on_host_with_vs(tflites, capsys):
    small, wide = str(tflites["small"]), str(tflites["wide"])
    assert cli.main(["bench", wide, "--vs", small, "--runs", "8", "--warmup", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["kernel"]) for r in out["results"]] == [
        (wide, "default"), (wide, "indirect_bgemm"), (small, "default"), (small, "indirect_bgemm")]
    assert set(out["time_ratio_model_over_vs"]) == {"default", "indirect_bgemm"}
    assert all(v["ratio"] > 1 for v in out["time_ratio_model_over_vs"].values())
    assert cli.main(["bench", small, "--vs", small]) == 2
    assert "same file" in capsys.readouterr().err


def test_cli_bench_on_a_device_stand_in(tflites, stand_ins, capsys):
    code = cli.main(["bench", str(tflites["small"]), "--device", "ssh://pi@box",
                     "--binary", str(stand_ins["tool"]), "--kernel", "default", "--profile",
                     "--runs", "4", "--remote-dir", str(stand_ins["remote"])])
    out = capsys.readouterr().out
    assert code == 0 and "| ssh://pi@box | default | 1 | 4 | 0.800 |" in out
    assert "| LceBconv2d | [conv]:3 | 0.400 | 80.0 |" in out
