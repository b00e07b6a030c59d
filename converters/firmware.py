"""Build, run, size, profile and flash the C runtime in ``firmware/`` for a model
directory written by :func:`converters.c_export.write`: thin wrappers around
``make -C firmware``.

The boards come from one table, ``firmware/boards/boards.tsv``, which the Makefile
reads too: :data:`BOARDS` maps each name to its ``core``, ``kind`` (``qemu`` or
``real``), linker script, optimization, default flasher and compiler ``cpu`` flags;
:data:`QEMU_BOARDS` and :data:`REAL_BOARDS` map names to cores.

Example::

    from converters import c_export, firmware
    c_export.write(model, "build/model", samples=x_test[:10], labels=y_test[:10])
    print(firmware.run("build/model", board="mps2-an386"))   # QEMU Cortex-M4, bit-exact check
    print(firmware.size("build/model", board="mps2-an386"))
    print(firmware.profile("build/model", "mps2-an386")["layers"])   # instructions per layer
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np

from bnnprune_tf.errors import FirmwareError
from bnnprune_tf.reporting import markdown_table

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
_FIELDS = ("core", "kind", "linker", "opt", "flasher", "cpu")


def read_boards(path=FIRMWARE / "boards" / "boards.tsv") -> dict[str, dict[str, str]]:
    """The board table: ``{name: {core, kind, linker, opt, flasher, cpu}}`` (one
    tab-separated row per board, ``#`` comments).

    Example::

        read_boards()["mps2-an386"]["core"]   # -> 'Cortex-M4'
    """
    boards = {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, *values = line.split("\t")
            if len(values) != len(_FIELDS):
                raise FirmwareError(f"{path}: board {name!r} needs {len(_FIELDS)} tab-separated "
                                    f"fields after its name ({', '.join(_FIELDS)})")
            boards[name] = dict(zip(_FIELDS, values))
    return boards


BOARDS = read_boards()
QEMU_BOARDS = {name: b["core"] for name, b in BOARDS.items() if b["kind"] == "qemu"}
REAL_BOARDS = {name: b["core"] for name, b in BOARDS.items() if b["kind"] == "real"}
_RESULT = re.compile(r"^(\d+) passed, (\d+) failed$", re.M)
_TEST = re.compile(r"^test (\d+): class (-?\d+) \(label (-?\d+)\) (ok|MISMATCH)$", re.M)


def memory(board: str) -> dict[str, int]:
    """``{"FLASH": bytes, "RAM": bytes}`` of ``board``'s linker script (the regions it names).

    Example::

        memory("mps2-an386")["RAM"]    # 4 MiB
    """
    if board not in BOARDS:
        return {}
    script = (FIRMWARE / "boards" / BOARDS[board]["linker"]).read_text()
    units = {"": 1, "K": 1 << 10, "M": 1 << 20}
    return {name: int(size) * units[unit.upper()] for name, size, unit in re.findall(
        r"^\s*(FLASH|RAM)\s*\([a-z]+\)\s*:.*LENGTH\s*=\s*(\d+)\s*([KkMm]?)", script, re.M)}


def check_fits(info: dict, board: str) -> None:
    """A clear error if the model data :func:`converters.c_export.write` reported (``info``)
    cannot fit ``board``: the arena in its RAM, the weights in its flash.

    Example::

        check_fits({"arena_bytes": 5 << 20, "weight_bytes": 0}, "mps2-an386")  # RAM error
    """
    regions = memory(board)
    for region, need, what in (("RAM", info.get("arena_bytes", 0), "activation arena"),
                               ("FLASH", info.get("weight_bytes", 0), "weights")):
        if region in regions and need > regions[region]:
            raise FirmwareError(
                f"the model's {what} needs {need:,} B but {board} has {regions[region]:,} B of "
                f"{region}: prune or narrow the model (width), or pick a larger board")


def check_board(board: str) -> None:
    """A clear error unless ``board`` is ``host`` or a board of ``boards.tsv``.

    Example::

        check_board("mps2-an386")
    """
    if board not in QEMU_BOARDS and board not in REAL_BOARDS and board != "host":
        raise FirmwareError(f"unknown board {board!r}: use host, {', '.join(QEMU_BOARDS)} "
                            f"(QEMU) or {', '.join(REAL_BOARDS)}")


def make(target: str, model_dir, board: str, build=None, **variables) -> str:
    """``make -C firmware TARGET BOARD=board MODEL=model_dir``; returns its stdout.

    Raises:
        FirmwareError: make failed (its message, e.g. the model does not fit the RAM).

    Example::

        make("size", "build/model", "mps2-an386")
    """
    check_board(board)
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
        build = Path(build or FIRMWARE / "build/host-opt")
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


def profile_rows(result: dict) -> dict[str, dict]:
    """Table rows of :func:`profile`'s layers (shape, MACs, instructions, per MAC) and a total."""
    rows = {f"{i} {layer['op']}": {
        "output": "x".join(map(str, layer["out"])), "MACs": layer["macs"],
        "instructions": layer["instructions"],
        "per MAC": f"{layer['per_mac']:.3f}" if layer["macs"] else ""}
        for i, layer in enumerate(result["layers"])}
    rows["total"] = {"instructions": result["total"]}
    return rows


def profile_markdown(result: dict) -> str:
    """:func:`profile_rows` as a markdown table, with its board.

    Example::

        print(profile_markdown(profile("build/model", "mps2-an386")))
    """
    return (f"Instructions per layer, {result['board']} ({result['core']}), one inference:\n\n"
            + markdown_table(profile_rows(result), "layer"))


class HostLibrary:
    """The C runtime built for this host as a shared library (``make lib``), called in
    process through ctypes: a fast bit-exact reference for the firmware, and a fair
    speed comparison with the LCE interpreter (no process start).

    Example::

        lib = HostLibrary("build/model")
        sums = lib.sums(codes)       # int8 codes (pixel - 128), one or a batch of images
    """

    def __init__(self, model_dir, build=None):
        import ctypes

        model_dir = Path(model_dir)
        build = Path(build or model_dir / "host-lib")
        make("lib", model_dir, "host", build)
        header = (model_dir / "model_data.h").read_text()
        define = {k: int(v) for k, v in re.findall(r"#define (BNN_\w+) (\d+)", header)}
        self.input_size, self.classes = define["BNN_INPUT_SIZE"], define["BNN_NUM_CLASSES"]
        self._lib = ctypes.CDLL(str(build / "libbnn.so"))
        self._run = self._lib.bnn_run
        self._run.argtypes = [ctypes.c_void_p] * 5
        self._run.restype = ctypes.c_int
        self._model = ctypes.addressof(ctypes.c_char.in_dll(self._lib, "bnn_model_data"))
        self._arena = np.zeros(define["BNN_ARENA_WORDS"], np.uint32)
        self._logits = np.zeros(self.classes, np.float32)

    def sums(self, codes) -> np.ndarray:
        """int32 sums of the last layer for int8 input codes, shape ``(N, classes)``."""
        codes = np.ascontiguousarray(np.asarray(codes, np.int8).reshape(-1, self.input_size))
        out = np.zeros((len(codes), self.classes), np.int32)
        for image, row in zip(codes, out):
            self._run(self._model, image.ctypes.data, self._arena.ctypes.data, row.ctypes.data,
                      self._logits.ctypes.data)
        return out


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


def _marks(model_dir, board: str, build, **variables) -> list[int]:
    """Instruction counts at every ``bnn_mark()`` call of the app under QEMU."""
    if board not in QEMU_BOARDS:
        raise FirmwareError("instructions are counted under QEMU: use one of "
                            + ", ".join(QEMU_BOARDS))
    make("plugin", model_dir, board)
    make("all", model_dir, board, build, **variables)
    elf = Path(build) / "bnn.elf"
    symbols = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True,
                             check=True).stdout
    mark = next(int(line.split()[0], 16) for line in symbols.splitlines()
                if line.split()[-1] == "bnn_mark")
    log = elf.with_suffix(".insns")
    done = subprocess.run(
        ["timeout", "600", "qemu-system-arm", "-M", board, "-display", "none", "-monitor", "none",
         "-serial", "none", "-semihosting-config", "enable=on,target=native", "-kernel", str(elf),
         "-plugin", f"{FIRMWARE / 'build/libinsncount.so'},mark={mark:#x}", "-d", "plugin",
         "-D", str(log)], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        raise FirmwareError(f"{board}: exit {done.returncode} (a test vector differs from Python, "
                            f"or the app faulted): {done.stdout[-500:]}{done.stderr[-500:]}")
    return [int(v) for v in re.findall(r"^mark (\d+)", log.read_text(), re.M)]


def count_instructions(model_dir, board: str, build=None, **variables) -> list[int]:
    """Instructions of every inference of the app under QEMU (between the pairs of
    ``bnn_mark()`` calls around ``bnn_run``), counted exactly by the project's TCG
    plugin ``firmware/tools/insncount.c``. ``variables``: e.g. ``kernel="ref"``.

    Example::

        count_instructions("build/model", "mps2-an386")   # -> [2944867, ...]
    """
    name = "-".join([board, *map(str, variables.values())])
    build = Path(build or FIRMWARE / f"build/count-{name}")
    marks = _marks(model_dir, board, build, **variables)
    return [b - a for a, b in zip(marks[0::2], marks[1::2])]


_DESCRIPTOR = re.compile(r"^  \{\.op = (BNN_\w+), (.*)\},$", re.M)


def layers(model_dir) -> list[dict]:
    """The layer descriptors of a model directory's ``model_data.c``: ``op`` (``first``,
    ``binary``, ``pool``, ``output``, ``affine``: SBNN, ``slices``: CBNN's pixel bits), the
    shapes, and ``macs``: multiply-accumulates of a conv (binary ones for binary convs, int8 x
    {-1, 0, 1} for the first; zero weights of ternary layers included), 0 for pools and
    slices.

    Example::

        [l["op"] for l in layers("build/model")]   # -> ['first', 'pool', 'binary', ...]
    """
    names = {"BNN_CONV_FIRST": "first", "BNN_BCONV": "binary", "BNN_MAXPOOL": "pool",
             "BNN_OUTPUT_CONV": "output", "BNN_SBCONV": "affine", "BNN_BCONV_PAIRS": "binary",
             "BNN_BCONV_MASKED": "binary", "BNN_INPUT_SLICES": "slices"}
    out = []
    for op, fields in _DESCRIPTOR.findall((Path(model_dir) / "model_data.c").read_text()):
        values = dict(re.findall(r"\.(\w+) = (-?\d+)", fields))
        d = {k: int(v) for k, v in values.items()}
        macs = 0 if op in ("BNN_MAXPOOL", "BNN_INPUT_SLICES") else \
            d["out_h"] * d["out_w"] * d["out_c"] * d["k_h"] * d["k_w"] * d["in_c"]
        out.append({"op": names[op], "in": [d["in_h"], d["in_w"], d["in_c"]],
                    "out": [d["out_h"], d["out_w"], d["out_c"]], "kernel": [d["k_h"], d["k_w"]],
                    "macs": macs})
    return out


def profile(model_dir, board: str, build=None) -> dict:
    """Instructions per layer under QEMU: the app built with ``PROFILE=1`` calls
    ``bnn_mark()`` after every layer. Returns ``layers`` (:func:`layers` plus
    ``instructions``, the median over the test vectors, and ``per_mac``, instructions per
    multiply-accumulate) and ``total`` (per inference, including the calls between layers).

    Example::

        for layer in profile("build/model", "mps2-an386")["layers"]:
            print(layer["op"], layer["out"], layer["instructions"], layer["per_mac"])
    """
    build = Path(build or FIRMWARE / f"build/profile-{board}")
    marks = _marks(model_dir, board, build, profile=1)
    found = layers(model_dir)
    per = len(found) + 2           # before, after each layer, after the inference
    runs = [marks[i:i + per] for i in range(0, len(marks) - per + 1, per)]
    if not marks:
        raise FirmwareError(f"{model_dir}: no inference ran: export the model with samples, "
                            "which become the test vectors the app runs")
    if len(marks) % per:
        raise FirmwareError(f"{board}: {len(marks)} marks do not split into inferences of "
                            f"{len(found)} layers: rebuild the model directory")
    for i, layer in enumerate(found):
        layer["instructions"] = int(np.median([r[i + 1] - r[i] for r in runs]))
        layer["per_mac"] = layer["instructions"] / layer["macs"] if layer["macs"] else None
    return {"board": board, "core": QEMU_BOARDS[board], "layers": found,
            "total": int(np.median([r[-1] - r[0] for r in runs]))}
