"""Robustness: how many bad inputs give a clear error and leave no file, and whether killed
runs resume to the uninterrupted result.

Bad inputs: every case of the table in ``tests/test_bad_inputs.py`` (CLI in-process, recipe,
Python API) is tried. A case is *clear* when it fails with a ``bnnprune_tf.errors`` type
(CLI: exit code 2 and one line on stderr, or argparse's usage error) whose message holds the
case's key words; *files left* counts cases after which a new file or directory exists.

Resume: ``tests/test_resume.py`` (SIGKILL of ``bnnprune run`` during training, during the
WFF stage and during convert, then reruns compared with an uninterrupted run bit for bit;
A -> B -> A; a changed data file; a concurrent run; the WFF round and sensitivity layer
checkpoints) is run with pytest; its passed / total cases are counted.

Run: ``python -m benchmarks.robustness`` (about 10 minutes on 2 loaded cores).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchmarks.common import write_results

ROOT = Path(__file__).resolve().parents[1]


def bad_inputs() -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    import test_bad_inputs as table

    from bnnprune_tf import data
    from bnnprune_tf.errors import BnnpruneError

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws = table.make_workspace(Path(tmp))
        small = data.load("mnist5k", limit=100)
        for case_id, argv, words in table.CLI_CASES:
            code, err, left = table.run_cli(ws, case_id, argv)
            usage = "usage:" in err
            clear = code == 2 and all(w in err for w in words) and (
                usage or (err.startswith("bnnprune: error: ") and err.count("\n") == 1))
            rows[f"cli/{case_id}"] = {"clear": clear, "files_left": sorted(left),
                                      "exit_code": code, "message": err.strip()[-300:]}
        for case_id, call, error, words in table.API_CASES:
            raised, left = table.run_api(ws, small, call)
            typed = isinstance(raised, error) and (
                isinstance(raised, BnnpruneError) or error is OSError)
            clear = typed and all(w in str(raised) for w in words)
            rows[f"api/{case_id}"] = {"clear": clear, "files_left": sorted(left),
                                      "error": type(raised).__name__,
                                      "message": str(raised)[:300]}
    return rows


def resume_cases() -> dict:
    """``{test name: "passed" | "failed" | ...}`` of tests/test_resume.py, run by pytest in a
    process of its own (its conftest sets TensorFlow's threads before TensorFlow starts)."""
    import subprocess
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "resume.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"--junitxml={report}", str(ROOT / "tests" / "test_resume.py")],
                       cwd=ROOT, check=False)
        cases = ET.parse(report).getroot().iter("testcase")
        return {case.get("name"): next((child.tag for child in case
                                        if child.tag in ("failure", "error", "skipped")),
                                       "passed") for case in cases}


def main() -> None:
    rows = bad_inputs()
    resume = resume_cases()
    counts = {"bad_inputs_tried": len(rows),
              "clear": sum(r["clear"] for r in rows.values()),
              "cases_leaving_files": sum(bool(r["files_left"]) for r in rows.values()),
              "resume_cases": len(resume),
              "resume_cases_passed": sum(v == "passed" for v in resume.values())}
    unclear = [k for k, r in rows.items() if not r["clear"]]
    markdown = "\n".join([
        "| measure | count |", "|---|---|",
        *[f"| {k.replace('_', ' ')} | {v} |" for k, v in counts.items()],
        "", "Resume cases (tests/test_resume.py):", "",
        "| case | outcome |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in resume.items()],
        "", f"Unclear bad inputs: {', '.join(unclear) or 'none'}."])
    write_results("robustness", {"counts": counts, "bad_inputs": rows, "resume": resume},
                  markdown, "python -m benchmarks.robustness")
    print(markdown)


if __name__ == "__main__":
    main()
