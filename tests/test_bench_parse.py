"""converters.benchmark_log: parse lce_benchmark_model output in its documented formats.

Samples and where they come from:

- QUICKNET_RPI: real output of lce_benchmark_model (QuickNet on a Raspberry Pi 4B,
  LCE v0.7 era, no log prefix), as printed in the LCE docs notebook end_to_end.ipynb
  and quoted in ../shared/reference/lce.md section 3.3 (lines elided there are
  left out here too).
- SUMMARY_TF53138: real TF benchmark_model "Summary by node type" rows (tabs,
  right-aligned fields) quoted in tensorflow/tensorflow#53138.
- The other samples are written by hand in the formats the reference documents
  (INFO: prefixes, TF 2.16 tables without [start], older tables with [start],
  scientific notation, nan, "(all same)"); they are not captured from a device.
"""

import math

import pytest

from bnnprune_tf.errors import BenchmarkError
from converters.benchmark_log import parse, parse_stats, strip_prefix

QUICKNET_RPI = """\
STARTING!
Duplicate flags: num_threads
Min num runs: [50]
Num threads: [1]
Loaded model quicknet.tflite
The input model file size (MB): 3.3512
Initialized session in 1.471ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=16 first=41707 curr=31870 min=31722 max=41707 avg=32491.4 std=2395

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=31929 curr=31278 min=31138 max=31929 avg=31420.6 std=260

Inference timings in us: Init: 1471, First inference: 41707, Warmup (avg): 32491.4, Inference (avg): 31420.6
"""

SUMMARY_TF53138 = (
    "============================== Summary by node type ==============================\n"
    "\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]\n"
    "\t                 CONV_2D\t       34\t   266.475\t    75.118%\t    75.118%\t     0.000\t       34\n"
    "\t       DEPTHWISE_CONV_2D\t       13\t    83.740\t    23.606%\t    98.724%\t     0.000\t       13\n"
    "\tTFLite_Detection_PostProcess\t        1\t     3.579\t     1.009%\t    99.733%\t     0.000\t        1\n"
    "\t           CONCATENATION\t        2\t     0.483\t     0.136%\t    99.869%\t     0.000\t        2\n"
)

RUN_ORDER_TF216 = (
    "INFO: Operator-wise Profiling Info for Regular Benchmark Runs:\n"
    "INFO: ============================== Run Order ==============================\n"
    "INFO: \t             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]\n"
    "INFO: \t                   PADV2\t    0.010\t    0.009\t  1.200%\t  1.200%\t     0.000\t        1\t[mnist_bnn/conv_first/PadV2]:0\n"
    "INFO: \t                 CONV_2D\t    0.101\t    0.098\t 13.066%\t 14.266%\t     0.000\t        1\t[mnist_bnn/conv_first/Conv2D]:1\n"
    "INFO: \t             LceQuantize\t    0.020\t    0.019\t  2.533%\t 16.800%\t     0.000\t        1\t[mnist_bnn/ste_sign/Sign]:2\n"
    "INFO: \t              LceBconv2d\t    0.610\t    0.600\t 80.000%\t 96.800%\t     0.000\t        1\t[mnist_bnn/quant_conv2d/Conv2D]:3\n"
    "INFO: \t                 SOFTMAX\t    0.025\t    0.024\t  3.200%\t100.000%\t     0.000\t        1\t[Identity]:4\n"
    "INFO: \n"
    "INFO: ============================== Top by Computation Time ==============================\n"
    "INFO: \t             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]\n"
    "INFO: \t              LceBconv2d\t    0.610\t    0.600\t 80.000%\t 80.000%\t     0.000\t        1\t[mnist_bnn/quant_conv2d/Conv2D]:3\n"
    "INFO: \n"
    "INFO: Number of nodes executed: 5\n"
    "INFO: ============================== Summary by node type ==============================\n"
    "INFO: \t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]\n"
    "INFO: \t              LceBconv2d\t        1\t     0.600\t    80.000%\t    80.000%\t     0.000\t        1\n"
    "INFO: \t                 CONV_2D\t        1\t     0.098\t    13.066%\t    93.066%\t     0.000\t        1\n"
    "INFO: \n"
    "INFO: Timings (microseconds): count=50 first=766 curr=750 min=741 max=801 avg=750.2 std=9\n"
    "INFO: Memory (bytes): count=0\n"
    "INFO: 5 nodes observed\n"
)


def tf216_output(profile=RUN_ORDER_TF216):
    return (
        "INFO: STARTING!\n"
        "INFO: Log parameter values verbosely: [0]\n"
        "INFO: Num threads: [1]\n"
        "INFO: Graph: [/tmp/bnnprune-bench/model.tflite]\n"
        "INFO: Loaded model /tmp/bnnprune-bench/model.tflite\n"
        "WARN: Duplicate flags: num_threads\n"
        "INFO: The input model file size (MB): 0.0194\n"
        "INFO: Initialized session in 3.12ms.\n"
        "INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but "
        "terminate if exceeding 150 seconds.\n"
        "INFO: count=5 curr=812 (all same)\n"
        "INFO: \n"
        "INFO: Running benchmark for at least 50 iterations and at least 1 seconds but "
        "terminate if exceeding 150 seconds.\n"
        "INFO: count=1334 first=766 curr=748 min=741 max=1.24027e+06 avg=751.5 std=12 "
        "p5=742 median=749 p95=770\n"
        "INFO: \n"
        + profile +
        "INFO: Inference timings in us: Init: 3120, First inference: 1.24027e+06, "
        "Warmup (avg): 812, Inference (avg): 751.5\n"
        "INFO: Note: as the benchmark tool itself affects memory footprint, the following is "
        "only APPROXIMATE to the actual memory footprint of the model at runtime. Take the "
        "information at your discretion.\n"
        "INFO: Memory footprint delta from the start of the tool (MB): init=2.1 overall=3.4\n")


def test_real_quicknet_output_without_prefix():
    log = parse(QUICKNET_RPI)
    assert (log.init_us, log.first_inference_us) == (1471, 41707)
    assert (log.warmup_avg_us, log.inference_avg_us) == (32491.4, 31420.6)
    assert log.warmup.count == 16 and log.warmup.max_us == 41707
    t = log.inference
    assert (t.count, t.first_us, t.min_us, t.max_us, t.mean_us, t.std_us) == (
        50, 31929, 31138, 31929, 31420.6, 260)
    assert t.median_us is None                  # this TF version prints no median
    assert log.ops == [] and log.ops_by_type == {}


def test_tf216_output_with_prefixes_profile_and_scientific_notation():
    log = parse(tf216_output())
    assert log.first_inference_us == 1.24027e+06
    assert log.warmup.count == 5 and log.warmup.mean_us == 812 and log.warmup.std_us == 0
    assert log.inference.median_us == 749 and log.inference.max_us == 1.24027e+06
    assert [op.node_type for op in log.ops] == ["PADV2", "CONV_2D", "LceQuantize",
                                                "LceBconv2d", "SOFTMAX"]
    bconv = log.ops[3]
    assert (bconv.first_ms, bconv.avg_ms, bconv.percent, bconv.times_called) == (
        0.610, 0.600, 80.0, 1)
    assert bconv.name == "[mnist_bnn/quant_conv2d/Conv2D]:3"
    assert log.ops_by_type == {"LceBconv2d": {"count": 1, "avg_ms": 0.6, "percent": 80.0},
                               "CONV_2D": {"count": 1, "avg_ms": 0.098, "percent": 13.066}}


def test_older_tables_with_start_column():
    old = (
        "Operator-wise Profiling Info for Regular Benchmark Runs:\n"
        "============================== Run Order ==============================\n"
        "\t             [node type]\t  [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t"
        "  [mem KB]\t[times called]\t[Name]\n"
        "\t              LceBconv2d\t    0.000\t    2.500\t    2.400\t 96.000%\t 96.000%\t"
        "     0.000\t        1\t[conv]:0\n"
        "\t           TfLiteXNNPackDelegate\t    2.400\t    0.110\t    0.100\t  4.000%\t100.000%\t"
        "     0.000\t        1\t[Identity]:1\n"
        "\n")
    log = parse(tf216_output(profile=old))
    assert [(o.node_type, o.first_ms, o.avg_ms) for o in log.ops] == [
        ("LceBconv2d", 2.5, 2.4), ("TfLiteXNNPackDelegate", 0.11, 0.1)]


def test_real_summary_rows_from_tensorflow_53138():
    profile = "Operator-wise Profiling Info for Regular Benchmark Runs:\n" + SUMMARY_TF53138
    log = parse(QUICKNET_RPI.replace("Inference timings", profile + "\nInference timings"))
    assert log.ops_by_type["CONV_2D"] == {"count": 34, "avg_ms": 266.475, "percent": 75.118}
    assert log.ops_by_type["TFLite_Detection_PostProcess"]["count"] == 1
    assert len(log.ops_by_type) == 4


def test_space_separated_copy_of_a_table():
    spaced = RUN_ORDER_TF216.replace("\t", "    ")
    log = parse(tf216_output(profile=spaced))
    assert [op.node_type for op in log.ops][:2] == ["PADV2", "CONV_2D"]
    assert log.ops[3].avg_ms == 0.6


def test_stdout_and_stderr_interleaved_and_nan():
    text = (QUICKNET_RPI.replace("Warmup (avg): 32491.4", "Warmup (avg): nan")
            .replace("Initialized session", "ERROR: some delegate warning on stderr\n"
                                            "Initialized session"))
    log = parse(text)
    assert math.isnan(log.warmup_avg_us) and log.inference_avg_us == 31420.6


@pytest.mark.parametrize("line, expected", [
    ("count=0", (0, None, None)),
    ("count=1 curr=512", (1, 512.0, 512.0)),
    ("count=7 curr=1.5e+06 (all same)", (7, 1.5e6, 1.5e6)),
    ("count=3 first=10 curr=12 min=9 max=14 avg=11.5 std=2", (3, 11.5, 9.0)),
])
def test_stats_line_variants(line, expected):
    t = parse_stats(line)
    assert (t.count, t.mean_us, t.min_us) == expected


def test_prefixes_are_stripped():
    assert strip_prefix("INFO: count=3") == "count=3"
    assert strip_prefix("WARN: x") == "x" and strip_prefix("ERROR: y") == "y"
    assert strip_prefix("I0312 10:11:12.123456  4242 benchmark.cc:99] count=3") == "count=3"
    assert strip_prefix("\tLceBconv2d\t0.1") == "\tLceBconv2d\t0.1"


def test_unparsable_output_is_a_clear_error():
    failed = ("INFO: Loaded model /tmp/m.tflite\n"
              "ERROR: Didn't find custom op for name 'LceBconv2d' with version 1\n"
              "ERROR: Registration failed.\n"
              "Failed to initialize the interpreter\n")
    with pytest.raises(BenchmarkError, match="no 'Inference timings in us' line") as info:
        parse(failed)
    assert "LceBconv2d" in str(info.value)          # the device's error is quoted
    with pytest.raises(BenchmarkError, match=r"\(nothing\)"):
        parse("")
    with pytest.raises(BenchmarkError, match="not a benchmark stats line"):
        parse_stats("avg=3")
