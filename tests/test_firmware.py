"""The C runtime: host build and QEMU Cortex-M4/M7/M55, bit-exact against Python."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from bnnprune_tf import masks, models, prune
from converters import c_export, fold
from bnnprune_tf.errors import FirmwareError
from converters import firmware as fw
from conftest import require_tools
from test_fold import irregular_bnn, randomize_batchnorm

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
BOARDS = ["mps2-an386", "mps2-an500", "mps3-an547"]


def slot_masks(kernel_shape, rng, empty=0.3, full=0.3):
    """A 0/1 weight mask (HWIO) whose slots (tap, 32 input channels, filter) are each
    empty, full, or random (some zeros), as the C runtime's ternary format sees them."""
    kh, kw, cin, cout = kernel_shape
    kind = rng.choice(3, (kh, kw, -(-cin // 32), cout), p=[empty, full, 1 - empty - full])
    kind = np.repeat(kind, 32, axis=2)[:, :, :cin, :]
    return np.where(kind == 2, rng.random(kernel_shape) < 0.5, kind).astype("float32")


def ternary_bnn(seed=0):
    """A masked BNN whose weight masks make three ternary layers with empty, full and
    partial slots: 2 input words, zero and +1 padding, a stride, a 7x7 classifier. The
    7x7 layers run pixel pairs (an odd last pixel; 34 filters: 32 + 2), beside masked
    pixels on the zero-padded one."""
    tf.keras.utils.set_random_seed(seed)
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", use_bias=False)
    layers = tf.keras.layers
    inputs = tf.keras.Input((28, 28, 1))
    x = lq.layers.QuantConv2D(40, 3, padding="same", pad_values=1.0, kernel_quantizer="ste_sign",
                              use_bias=False, name="first")(inputs)
    x = layers.MaxPool2D(2)(layers.BatchNormalization(scale=True)(x))
    x = lq.layers.QuantConv2D(36, 3, strides=2, padding="same", name="zero_pad", **binary)(x)
    x = layers.BatchNormalization(scale=True)(x)
    x = lq.layers.QuantConv2D(34, 3, padding="same", pad_values=1.0, name="one_pad", **binary)(x)
    x = layers.BatchNormalization()(x)
    x = lq.layers.QuantConv2D(10, 7, name="classifier", **binary)(x)
    x = layers.Flatten()(layers.BatchNormalization(scale=True)(x))
    model = masks.prunable(randomize_batchnorm(
        tf.keras.Model(inputs, layers.Activation("softmax")(x), name="ternary"), seed))
    rng = np.random.default_rng(seed)
    for name in ("zero_pad", "one_pad", "classifier"):
        layer = model.get_layer(name)
        layer.set_masks(weights=slot_masks(layer.weight_mask.shape, rng))
    return model


def make(*args, check=True):
    return subprocess.run(["make", "-s", "-C", str(FIRMWARE), *args], capture_output=True,
                          text=True, timeout=300, check=check)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, mnist_small):
    """Five models written as model data, with 4 real test images each: unpruned,
    filter-pruned (masked, shrunk by the export) and ternary (weight masks)."""
    x, y = mnist_small.arrays("test", limit=4)
    out = {}
    unpruned = randomize_batchnorm(models.build("mnist_bnn", (28, 28, 1), 10, width=0.3), seed=4)
    for name, model in [
        ("mnist_bnn", randomize_batchnorm(models.build("mnist_bnn", (28, 28, 1), 10, width=0.2))),
        ("binary_mlp", randomize_batchnorm(models.build("binary_mlp", (28, 28, 1), 10, width=0.2))),
        ("irregular", irregular_bnn(seed=3)),
        ("shrunk", prune.prune_filters(unpruned, "l1", ratio=0.5)),
        ("ternary", ternary_bnn(seed=5)),
    ]:
        directory = tmp_path_factory.mktemp(name)
        c_export.write(model, directory, samples=x, labels=y)
        out[name] = (model, directory, x)
    return out


def _check_output(stdout, model, x):
    lines = re.findall(r"test \d+: class (\d+) \(label -?\d+\) (ok|MISMATCH)", stdout)
    assert [status for _, status in lines] == ["ok"] * len(x), stdout
    assert "4 passed, 0 failed" in stdout
    keras = fold.keras_logits(model, x).argmax(1)
    np.testing.assert_array_equal([int(c) for c, _ in lines], keras)


@pytest.mark.parametrize("kernel", ["opt", "ref"])
@pytest.mark.parametrize("name", ["mnist_bnn", "binary_mlp", "irregular", "shrunk", "ternary"])
def test_host_build_is_bit_exact(exported, name, kernel, tmp_path):
    """Optimized and reference kernels both give Python's exact sums."""
    require_tools("gcc", "make")
    model, directory, x = exported[name]
    make("host", "BOARD=host", f"MODEL={directory}", f"KERNEL={kernel}", f"BUILD={tmp_path}")
    run = subprocess.run([str(tmp_path / "bnn")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout
    _check_output(run.stdout, model, x)


def test_host_library_in_process_is_bit_exact(exported, tmp_path):
    require_tools("gcc", "make")
    from bnnprune_tf import prune

    model, directory, x = exported["ternary"]
    folded = fold.fold(prune.strip_pruning(model, keep_weight_masks=True))
    codes = folded.quantize_input(x)
    lib = fw.HostLibrary(directory, tmp_path)
    np.testing.assert_array_equal(lib.sums(codes),
                                  folded.output.sums(folded.hidden(codes)).reshape(len(x), -1))


def test_a_wrong_expected_value_fails_the_run(exported, tmp_path):
    require_tools("gcc", "make")
    _, directory, _ = exported["mnist_bnn"]
    source = (directory / "model_data.c").read_text()
    head, sums = source.split("bnn_test_sums")
    first = re.search(r"\{(-?\d+)", sums)
    broken = sums[:first.start(1)] + str(int(first.group(1)) + 2) + sums[first.end(1):]
    (tmp_path / "model_data.c").write_text(head + "bnn_test_sums" + broken)
    (tmp_path / "model_data.h").write_text((directory / "model_data.h").read_text())
    make("host", "BOARD=host", f"MODEL={tmp_path}", f"BUILD={tmp_path}")
    run = subprocess.run([str(tmp_path / "bnn")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "3 passed, 1 failed" in run.stdout
    assert "test 0: class" in run.stdout and "MISMATCH" in run.stdout


@pytest.mark.parametrize("kernel", ["opt", "ref"])
@pytest.mark.parametrize("name", ["mnist_bnn", "irregular", "shrunk", "ternary"])
@pytest.mark.parametrize("board", BOARDS)
def test_qemu_boards_are_bit_exact(exported, board, name, kernel, tmp_path):
    """Per core: the optimized kernels (assembly on M4/M7, Helium on M55) and the
    reference ones give Python's exact sums."""
    require_tools("arm-none-eabi-gcc", "qemu-system-arm", "make")
    model, directory, x = exported[name]
    variables = [f"BOARD={board}", f"MODEL={directory}", f"BUILD={tmp_path}", f"KERNEL={kernel}"]
    result = make("run", *variables, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    _check_output(result.stdout, model, x)
    size = make("size", *variables).stdout
    text, data, bss = (int(v) for v in size.splitlines()[-1].split()[:3])
    assert 4000 < text < 64000 and bss >= 4 * 2 * (28 * 28 // 4)   # arena of two halves


def test_make_size_does_not_relink_and_keeps_the_build_variables(exported, tmp_path):
    require_tools("arm-none-eabi-gcc", "make")
    _, directory, _ = exported["shrunk"]
    ref = [f"MODEL={directory}", f"BUILD={tmp_path}", "KERNEL=ref"]
    make("size", *ref)
    elf = tmp_path / "bnn.elf"
    built = elf.stat().st_mtime_ns
    assert make("size", *ref).stdout.split()[-6:] and elf.stat().st_mtime_ns == built
    other = make("size", f"MODEL={directory}", f"BUILD={tmp_path}", check=False)   # KERNEL=opt
    assert other.returncode != 0 and elf.stat().st_mtime_ns == built
    assert "was built with BOARD=mps2-an386 KERNEL=ref" in other.stderr


def test_one_board_table_for_make_and_python():
    require_tools("make")
    table = fw.read_boards()
    assert fw.BOARDS == table and set(fw.QEMU_BOARDS) == set(BOARDS)
    assert {b["kind"] for b in table.values()} == {"qemu", "real"}
    unknown = make("BOARD=mps9", check=False)
    assert unknown.returncode != 0
    for name in table:                                   # make names every board of the table
        assert name in unknown.stderr + unknown.stdout
    with pytest.raises(FirmwareError, match="unknown board 'mps9'"):
        fw.make("size", "/nonexistent", "mps9")


def test_profile_counts_every_layer(exported, tmp_path):
    require_tools("arm-none-eabi-gcc", "qemu-system-arm", "make", "gcc")
    _, directory, _ = exported["mnist_bnn"]
    result = fw.profile(directory, "mps2-an386", tmp_path / "profile")
    ops = [layer["op"] for layer in result["layers"]]
    assert ops == ["first", "pool", "binary", "pool", "binary", "pool", "output"]
    counts = [layer["instructions"] for layer in result["layers"]]
    assert all(c > 0 for c in counts)
    whole = fw.count_instructions(directory, "mps2-an386", tmp_path / "whole")[0]
    assert 0 <= result["total"] - sum(counts) < 500           # + the logits' argmax
    assert abs(result["total"] - whole) < 20 * len(counts)    # a mark costs a few instructions
    convs = [layer for layer in result["layers"] if layer["op"] == "binary"]
    assert convs[0]["macs"] == 14 * 14 * 13 * 3 * 3 * 6   # width 0.2: 6 -> 13 channels
    assert all(layer["per_mac"] == layer["instructions"] / layer["macs"] for layer in convs)


def test_model_too_big_for_the_ram_is_a_clear_build_error(tmp_path):
    require_tools("arm-none-eabi-gcc", "make")
    wide = models.build("binary_mlp", (28, 28, 1), 10, width=0.25)
    c_export.write(wide, tmp_path, samples=np.zeros((1, 28, 28, 1), np.float32))
    header = (tmp_path / "model_data.h").read_text()
    words = int(re.search(r"BNN_ARENA_WORDS (\d+)", header).group(1))
    (tmp_path / "model_data.h").write_text(header.replace(
        f"BNN_ARENA_WORDS {words}", "BNN_ARENA_WORDS (200 * 1024)"))      # 800 KiB > 512 KiB
    result = make("BOARD=mps3-an547", f"MODEL={tmp_path}", f"BUILD={tmp_path}", check=False)
    assert result.returncode != 0
    assert "does not fit this board's RAM" in result.stdout + result.stderr


def test_instruction_count_plugin_is_exact_and_repeatable(exported, tmp_path):
    require_tools("arm-none-eabi-gcc", "qemu-system-arm", "make", "gcc")
    _, directory, _ = exported["binary_mlp"]
    counts = [fw.count_instructions(directory, "mps2-an386", tmp_path) for _ in range(2)]
    assert counts[0] == counts[1]
    # 784x157 first-layer MACs alone take more than 100k instructions
    assert len(counts[0]) == 4 and all(c > 100_000 for c in counts[0])


@pytest.mark.parametrize("board,origin", [("stm32f746g-disco", 0x08000000),
                                          ("nucleo-h743zi", 0x08000000), ("nrf52840-dk", 0)])
def test_real_board_builds_link_with_uart_output(exported, board, origin, tmp_path):
    require_tools("arm-none-eabi-gcc", "make")
    _, directory, _ = exported["ternary"]
    make(f"BOARD={board}", f"MODEL={directory}", f"BUILD={tmp_path}")
    elf = str(tmp_path / "bnn.elf")
    headers = subprocess.run(["arm-none-eabi-objdump", "-h", elf], capture_output=True,
                             text=True, check=True).stdout
    text = next(line.split() for line in headers.splitlines() if " .text " in line)
    assert int(text[3], 16) == origin                        # vector table at the flash origin
    code = subprocess.run(["arm-none-eabi-objdump", "-d", elf], capture_output=True, text=True,
                          check=True).stdout
    assert "bkpt" not in code and "<_write>:" in code        # UART, no semihosting
    run = make("run", f"BOARD={board}", f"MODEL={directory}", f"BUILD={tmp_path}", check=False)
    assert run.returncode != 0 and "does not run under QEMU" in run.stdout


def test_flash_names_a_missing_tool_and_a_qemu_board(exported, tmp_path):
    require_tools("arm-none-eabi-gcc", "make")
    _, directory, _ = exported["ternary"]
    tools = tmp_path / "bin"                                 # PATH without any flashing tool
    tools.mkdir()
    for name in ("make", "sh", "awk", "arm-none-eabi-gcc", "arm-none-eabi-objcopy", "timeout",
                 "mkdir", "test", "cat", "grep", "rm", "mktemp"):
        if shutil.which(name):
            (tools / name).symlink_to(shutil.which(name))
    env = {"PATH": str(tools), "HOME": str(tmp_path)}
    args = ["make", "-s", "-C", str(FIRMWARE), "flash", f"MODEL={directory}"]
    missing = subprocess.run(args + ["BOARD=nrf52840-dk", "FLASHER=pyocd", f"BUILD={tmp_path}/a"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert missing.returncode != 0 and "pyocd is not installed: pip install pyocd" in missing.stderr
    no_pack = subprocess.run(args + ["BOARD=stm32f746g-disco", "FLASHER=pyocd",
                                     f"BUILD={tmp_path}/b"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert "pyocd has no built-in stm32f746 target" in no_pack.stderr
    qemu = make("flash", "BOARD=mps2-an386", f"MODEL={directory}", f"BUILD={tmp_path}/c",
                check=False)
    assert qemu.returncode != 0 and "is not a real board" in qemu.stdout


@pytest.mark.parametrize("flasher", ["openocd", "st-flash"])
def test_flash_without_a_probe_is_a_clear_error(exported, flasher, tmp_path):
    require_tools("arm-none-eabi-gcc", "make", flasher, packages="openocd stlink-tools")
    _, directory, _ = exported["ternary"]
    result = make("flash", "BOARD=nucleo-h743zi", f"FLASHER={flasher}", f"MODEL={directory}",
                  f"BUILD={tmp_path}", check=False)
    assert result.returncode != 0
    assert "no debug probe found: connect nucleo-h743zi's debug USB port" in result.stderr
    assert (tmp_path / "bnn.hex").stat().st_size > 0 and (tmp_path / "bnn.bin").stat().st_size > 0


def test_cli_builds_runs_and_sizes_a_masked_model(tmp_path, capsys):
    require_tools("arm-none-eabi-gcc", "qemu-system-arm", "make", "gcc")
    from pipelines.cli import main

    ternary_bnn(seed=2).save(tmp_path / "m.keras")
    out = tmp_path / "model"
    assert main(["firmware", "build", str(tmp_path / "m.keras"), "--data", "mnist5k",
                 "--limit", "3", "--out", str(out), "--board", "mps3-an547"]) == 0
    assert '"tests": 3' in capsys.readouterr().out
    for board in ("host", "mps3-an547"):
        assert main(["firmware", "run", str(out), "--board", board]) == 0
        assert "3 passed, 0 failed" in capsys.readouterr().out
    assert main(["firmware", "run", str(out), "--board", "mps3-an547", "--profile"]) == 0
    table = capsys.readouterr().out
    assert "| 2 binary | 7x7x36 |" in table and "| total |  |  |" in table
    assert main(["firmware", "size", str(out), "--board", "nrf52840-dk"]) == 0
    assert json.loads(capsys.readouterr().out)["ram"] > 0
    assert main(["firmware", "run", str(out), "--board", "nrf52840-dk"]) == 2
    assert "does not run here" in capsys.readouterr().err
    assert main(["firmware", "flash", str(out), "--board", "mps2-an386"]) == 2
    assert "not a real board" in capsys.readouterr().err
    assert main(["firmware", "size", str(out), "--board", "mps9"]) == 2
    assert "unknown board 'mps9'" in capsys.readouterr().err


def test_firmware_stage_reports_instructions_and_footprint(tmp_path):
    require_tools("arm-none-eabi-gcc", "qemu-system-arm", "make", "gcc")
    from pipelines.recipe import parse_recipe
    from pipelines.runner import run_recipe

    recipe = parse_recipe({
        "name": "fw", "seed": 0, "data": {"name": "mnist5k", "limit": 300, "batch_size": 32},
        "model": {"name": "mnist_bnn", "width": 0.25}, "training": {"epochs": 1},
        "stages": ["train", {"firmware": {"boards": ["mps2-an386"], "samples": 3}}]})
    run_recipe(recipe, tmp_path, log=lambda m: None)
    manifest = json.loads((tmp_path / "stages" / "01-firmware.json").read_text())
    targets = manifest["metrics"]["firmware"]["targets"]
    assert targets["host"]["pass"] and targets["mps2-an386"]["pass"]
    assert targets["mps2-an386"]["passed"] == 3
    assert targets["mps2-an386"]["instructions_per_inference"] > 100_000
    assert targets["mps2-an386"]["flash"] > manifest["metrics"]["firmware"]["weight_bytes"]
    from pipelines import report

    assert "| mps2-an386 (Cortex-M4) | 3 passed, 0 failed |" in report.render(manifest["report"])
