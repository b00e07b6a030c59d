"""Build, run, size and flash the C runtime in ``firmware/`` for a model directory
written by :func:`converters.c_export.write`: thin wrappers around ``make -C firmware``.

Example::

    from converters import c_export, firmware
    c_export.write(model, "build/model", samples=x_test[:10], labels=y_test[:10])
    print(firmware.run("build/model", board="mps2-an386"))   # QEMU Cortex-M4, bit-exact check
    print(firmware.size("build/model", board="mps2-an386"))
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bnnprune_tf.errors import FirmwareError

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
QEMU_BOARDS = {"mps2-an386": "Cortex-M4", "mps2-an500": "Cortex-M7", "mps3-an547": "Cortex-M55"}
REAL_BOARDS = {"stm32f746g-disco": "Cortex-M7 (STM32F746NG)",
               "nucleo-h743zi": "Cortex-M7 (STM32H743ZI)", "nrf52840-dk": "Cortex-M4 (nRF52840)"}
_RESULT = re.compile(r"^(\d+) passed, (\d+) failed$", re.M)
_TEST = re.compile(r"^test (\d+): class (-?\d+) \(label (-?\d+)\) (ok|MISMATCH)$", re.M)


def make(target: str, model_dir, board: str, build=None, **variables) -> str:
    """``make -C firmware TARGET BOARD=board MODEL=model_dir``; returns its stdout.

    Raises:
        FirmwareError: make failed (its message, e.g. the model does not fit the RAM).

    Example::

        make("size", "build/model", "mps2-an386")
    """
    if board not in QEMU_BOARDS and board not in REAL_BOARDS and board != "host":
        raise FirmwareError(f"unknown board {board!r}: use host, {', '.join(QEMU_BOARDS)} "
                            f"(QEMU) or {', '.join(REAL_BOARDS)}")
    args = ["make", "-s", "-C", str(FIRMWARE), target, f"BOARD={board}",
            f"MODEL={Path(model_dir).resolve()}"]
    args += [f"BUILD={Path(build).resolve()}"] if build else []
    args += [f"{k.upper()}={v}" for k, v in variables.items()]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as e:
        raise FirmwareError("make is not installed: apt-get install make") from e
    if done.returncode != 0:
        raise FirmwareError(f"make {target} BOARD={board} failed (exit {done.returncode}):\n"
                            + (done.stdout + done.stderr).strip()[-2000:])
    return done.stdout


def size(model_dir, board: str, build=None) -> dict:
    """Footprint of the app for ``board`` from ``arm-none-eabi-size``: text, data, bss,
    flash = text + data, ram = data + bss (bytes).

    Example::

        size("build/model", "mps3-an547")["flash"]
    """
    text, data, bss = (int(v) for v in make("size", model_dir, board, build)
                       .strip().splitlines()[-1].split()[:3])
    return {"text": text, "data": data, "bss": bss, "flash": text + data, "ram": data + bss}


def run(model_dir, board: str = "host", build=None) -> dict:
    """Run the app on the host build or under QEMU: ``passed``, ``failed``,
    ``predictions`` and ``labels`` of the embedded test vectors, ``output``.

    Example::

        result = run("build/model", "mps2-an386")
        assert result["failed"] == 0
    """
    if board == "host":
        build = Path(build or FIRMWARE / "build/host-opt-swar")
        make("host", model_dir, board, build)
        done = subprocess.run([str(build / "bnn")], capture_output=True, text=True, timeout=600)
        output, rc = done.stdout, done.returncode
    elif board in QEMU_BOARDS:
        try:
            output, rc = make("run", model_dir, board, build), 0
        except FirmwareError as e:
            output, rc = str(e), 1
    else:
        raise FirmwareError(f"board {board!r} does not run here: use host or a QEMU board "
                            f"({', '.join(QEMU_BOARDS)}); flash a real board with flash()")
    result = _RESULT.search(output)
    if result is None:
        raise FirmwareError(f"{board}: the app printed no 'N passed, M failed' (exit {rc}):\n"
                            + output[-2000:])
    tests = _TEST.findall(output)
    return {"passed": int(result.group(1)), "failed": int(result.group(2)),
            "predictions": [int(t[1]) for t in tests], "labels": [int(t[2]) for t in tests],
            "output": output}


def flash(model_dir, board: str, flasher: str | None = None, build=None) -> str:
    """Build for a real board and flash it with openocd, pyocd or st-flash (default per
    board); returns the tool's output.

    Raises:
        FirmwareError: the tool is missing or no debug probe is attached (said so).

    Example::

        flash("build/model", "nucleo-h743zi", flasher="st-flash")
    """
    if board not in REAL_BOARDS:
        raise FirmwareError(f"board {board!r} is not a real board: flash one of "
                            f"{', '.join(REAL_BOARDS)}")
    return make("flash", model_dir, board, build, **({"flasher": flasher} if flasher else {}))


def count_instructions(model_dir, board: str, build=None, **variables) -> list[int]:
    """Instructions of every inference of the app under QEMU (between the pairs of
    ``bnn_mark()`` calls around ``bnn_run``), counted exactly by the project's TCG
    plugin ``firmware/tools/insncount.c``. ``variables``: ``kernel="ref"``,
    ``popcount="builtin"``.

    Example::

        count_instructions("build/model", "mps2-an386")   # -> [1812822, ...]
    """
    if board not in QEMU_BOARDS:
        raise FirmwareError("instructions are counted under QEMU: use one of "
                            + ", ".join(QEMU_BOARDS))
    name = "-".join([board, *map(str, variables.values())])
    build = Path(build or FIRMWARE / f"build/count-{name}")
    make("plugin", model_dir, board)
    make("all", model_dir, board, build, **variables)
    elf = build / "bnn.elf"
    symbols = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True,
                             check=True).stdout
    mark = next(int(line.split()[0], 16) for line in symbols.splitlines()
                if line.split()[-1] == "bnn_mark")
    log = elf.with_suffix(".insns")
    done = subprocess.run(
        ["timeout", "300", "qemu-system-arm", "-M", board, "-display", "none", "-monitor", "none",
         "-serial", "none", "-semihosting-config", "enable=on,target=native", "-kernel", str(elf),
         "-plugin", f"{FIRMWARE / 'build/libinsncount.so'},mark={mark:#x}", "-d", "plugin",
         "-D", str(log)], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        raise FirmwareError(f"{board}: exit {done.returncode}: "
                            f"{done.stdout[-500:]}{done.stderr[-500:]}")
    marks = [int(v) for v in re.findall(r"^mark (\d+)", log.read_text(), re.M)]
    return [b - a for a, b in zip(marks[0::2], marks[1::2])]
