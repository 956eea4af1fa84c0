"""Assign and grade the book's exercise notebooks with otter-grader.

Two commands, run from the top of the repository::

    python -m seqlib.classroom assign --out dist
    python -m seqlib.classroom grade --autograder dist/01_rnn/autograder/01_rnn-autograder.zip \\
        --submissions DIR --timeout 300 --out results.csv

``assign`` turns every master notebook ``exercises/<name>.md`` (Jupytext MyST in otter-grader's
assign format) into ``dist/<name>/student/<name>.ipynb`` (solutions replaced by ``...``, hidden
tests removed) and ``dist/<name>/autograder/`` (the solutions notebook and
``<name>-autograder.zip``). The output is deterministic: ``dist/<name>`` is emptied first, cell ids
are numbered and the zip is written with fixed timestamps, so an unchanged exercise gives the same
bytes.

``grade`` grades every ``*.ipynb`` (or zip holding one, as otter's export writes) in a directory. Each submission is
run by ``otter run`` in its own process group with a time limit. One CSV row per submission gives
its status (``ok``, ``error``: the grader could not finish, for example the kernel died or the
file is not a notebook, or ``timeout``: killed after ``--timeout`` seconds), its total and
per-question scores, and a message. A crash or a hang is reported and grading goes on with the
next submission.

THIS IS NOT A SANDBOX. Student code runs with your permissions. It can read and write your files,
use the network and start processes that outlive the time limit, and because the tests run in the
same Python process as the student's code, it can also fool them. For a class whose code you do
not trust, grade inside a container, a virtual machine or as an unprivileged user with no access
to anything else. POSIX only (Linux, macOS): the time limit kills process groups.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

__all__ = ["assign", "assign_one", "grade", "grade_submission", "question_points", "main"]

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip file can hold: no build time in the bytes


def assign(exercises_dir="exercises", out_dir="dist", names=None):
    """Write the student notebook and the autograder of every exercise notebook.

    exercises_dir: directory of master notebooks ``<name>.md``; out_dir: where ``<name>/`` goes;
    names: optional list of exercise names (file stems) to assign, default all.
    Returns the list of ``out_dir/<name>`` directories written.
    """
    exercises_dir, out_dir = pathlib.Path(exercises_dir), pathlib.Path(out_dir)
    sources = sorted(exercises_dir.glob("*.md"))
    if not sources:
        raise FileNotFoundError(f"exercises_dir: no exercise notebooks (*.md) in {exercises_dir}")
    if names:
        unknown = sorted(set(names) - {p.stem for p in sources})
        if unknown:
            raise ValueError(f"names: no exercise notebook {unknown} in {exercises_dir}; "
                             f"expected some of {[p.stem for p in sources]}")
        sources = [p for p in sources if p.stem in names]
    return [assign_one(src, out_dir) for src in sources]


def assign_one(source, out_dir="dist"):
    """Run ``otter assign`` on one Jupytext master notebook; returns ``out_dir/<name>``."""
    import jupytext
    import nbformat

    source, name = pathlib.Path(source), pathlib.Path(source).stem
    target = pathlib.Path(out_dir) / name
    with tempfile.TemporaryDirectory(prefix=f"assign-{name}-") as tmp:
        master = pathlib.Path(tmp) / f"{name}.ipynb"
        nb = jupytext.read(source)
        # otter assign reads the language from the kernelspec and refuses a notebook without one
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, master)
        # The tests are not run here (slow); tests/test_assign.py grades the solutions instead.
        cmd = [sys.executable, "-m", "otter", "assign", "--no-run-tests", "--no-pdfs",
               str(master), str(pathlib.Path(tmp) / "out")]
        done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"otter assign failed on {source}:\n{done.stdout}\n{done.stderr}")
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(pathlib.Path(tmp) / "out", target)
    for nb_path in (target / "student" / f"{name}.ipynb", target / "autograder" / f"{name}.ipynb"):
        _number_cell_ids(nb_path, name)
    zips = sorted((target / "autograder").glob(f"{name}-autograder*.zip"))
    if len(zips) != 1:
        raise RuntimeError(f"expected one autograder zip in {target / 'autograder'}, found {zips}")
    _repack_zip(zips[0], target / "autograder" / f"{name}-autograder.zip")
    if zips[0].name != f"{name}-autograder.zip":
        zips[0].unlink()
    return target


def grade(autograder, submissions, out_csv="results.csv", timeout=300.0, jobs=1, log=print):
    """Grade every submission in a directory and write one CSV row per submission.

    autograder: the ``*-autograder.zip`` written by :func:`assign`; submissions: a directory of
    ``*.ipynb`` (or otter ``*.zip`` exports); timeout: seconds allowed per submission; jobs: how
    many submissions to grade at once. Each submission's log goes to ``<out_csv stem>-logs/``.
    Returns the rows (dicts with the CSV's columns).
    """
    autograder, submissions = pathlib.Path(autograder), pathlib.Path(submissions)
    out_csv = pathlib.Path(out_csv)
    if not autograder.is_file():
        raise FileNotFoundError(f"autograder: no such file {autograder} (run `make assign` first)")
    if not submissions.is_dir():
        raise NotADirectoryError(f"submissions: expected a directory, got {submissions}")
    if not timeout > 0:
        raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    points = question_points(autograder)
    files = sorted(p for p in submissions.iterdir() if p.suffix in (".ipynb", ".zip") and p.is_file())
    logs = out_csv.parent / f"{out_csv.stem}-logs"
    logs.mkdir(parents=True, exist_ok=True)

    def one(path):
        return grade_submission(autograder, path, timeout, logs / f"{path.name}.log")

    rows = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for i, row in enumerate(pool.map(one, files), 1):
            rows.append(row)
            score = f"{row['score']}/{row['possible']}" if row["status"] == "ok" else row["message"]
            log(f"[{i}/{len(files)}] {row['submission']}: {row['status']} {score} ({row['seconds']} s)")
    columns = ["submission", "status", "score", "possible", *points, "seconds", "message"]
    with open(out_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    log(f"wrote {out_csv} ({len(rows)} submissions; logs in {logs})")
    return rows


def grade_submission(autograder, submission, timeout=300.0, log_path=None):
    """Grade one submission in its own process group; kill the whole group after ``timeout`` s.

    Returns a dict: submission, status (ok/error/timeout), score, possible, one entry per
    question (its score; empty unless status is ok), seconds, message.
    """
    autograder, submission = pathlib.Path(autograder).resolve(), pathlib.Path(submission).resolve()
    row = {"submission": submission.name, "status": "error", "score": "", "possible": "", "message": ""}
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        result = pathlib.Path(tmp) / "result.json"
        # Under the name it was assigned with, so that its own `otter.Notebook("<name>.ipynb")`
        # cell finds it, whatever the student called the file.
        copy = pathlib.Path(tmp) / "submission" / (_assignment_name(autograder) + ".ipynb")
        copy.parent.mkdir()
        try:
            _copy_notebook(submission, copy)
        except ValueError as e:
            row.update(seconds=round(time.monotonic() - start, 1), message=str(e))
            return row
        cmd = [sys.executable, "-c",
               "import sys; from seqlib.classroom import _grade_here; _grade_here(*sys.argv[1:])",
               str(autograder), str(copy), str(result)]
        log_file = open(log_path, "w") if log_path else subprocess.DEVNULL
        try:
            # Temporary files and the kernel's connection file go under tmp, so that a killed
            # grader leaves nothing behind.
            env = dict(os.environ, TMPDIR=tmp, JUPYTER_RUNTIME_DIR=tmp)
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                returncode = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                returncode = None
            finally:
                _kill_process_tree(proc)
        finally:
            if log_path:
                log_file.close()
        row["seconds"] = round(time.monotonic() - start, 1)
        if returncode is None:
            row.update(status="timeout", message=f"killed after {timeout:g} s")
        elif returncode != 0 or not result.is_file():
            row["message"] = _last_error_line(log_path) or f"grader exited with code {returncode}"
        else:
            got = json.loads(result.read_text())
            row.update(status="ok", score=_num(got["score"]), possible=_num(got["possible"]))
            row.update({q: _num(s) for q, s in got["scores"].items()})
            if got["cell_errors"]:
                row["message"] = f"{len(got['cell_errors'])} cell(s) raised: " + ", ".join(got["cell_errors"])
    return row


def question_points(autograder):
    """{question name: points} read from the test files inside an autograder zip."""
    points = {}
    with zipfile.ZipFile(autograder) as zf:
        for member in sorted(zf.namelist()):
            if re.fullmatch(r"tests/[^/]+\.py", member):
                text = zf.read(member).decode()
                m = re.search(r"^points = (.+)$", text, flags=re.M)
                points[pathlib.PurePosixPath(member).stem] = m.group(1).strip() if m else ""
    return points


def _copy_notebook(submission, target):
    """Copy a submitted .ipynb, or the one .ipynb inside a submitted zip (otter's export), to target."""
    if submission.suffix != ".zip":
        shutil.copyfile(submission, target)
        return
    try:
        with zipfile.ZipFile(submission) as zf:
            notebooks = [m for m in zf.namelist() if m.endswith(".ipynb") and "checkpoint" not in m]
            if len(notebooks) != 1:
                raise ValueError(f"expected one notebook in the zip, found {len(notebooks)}")
            target.write_bytes(zf.read(notebooks[0]))
    except zipfile.BadZipFile as e:
        raise ValueError(f"not a zip file: {e}") from None


def _assignment_name(autograder):
    with zipfile.ZipFile(autograder) as zf:
        if "otter_config.json" in zf.namelist():
            name = json.loads(zf.read("otter_config.json")).get("assignment_name")
            if name:
                return name
    return pathlib.Path(autograder).stem.split("-autograder")[0]


def _grade_here(autograder, submission, result_path):
    """Runs inside the grading subprocess: otter run, then the scores as JSON."""
    from otter.run import main as otter_run

    results = otter_run(submission, autograder=autograder, output_dir=None, no_logo=True)
    if results.has_catastrophic_failure():
        print(f"GradingError: {results.catastrophic_error}", flush=True)
        sys.exit(1)
    cell_errors = [out.get("ename", "Error")
                   for cell in (results.notebook.cells if results.notebook else [])
                   if cell.cell_type == "code"
                   for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    scores = {name: results.get_score(name) for name in results.test_files}
    pathlib.Path(result_path).write_text(json.dumps({
        "score": results.total, "possible": results.possible, "scores": scores,
        "cell_errors": cell_errors}))


def _kill_process_tree(proc):
    """SIGKILL the worker's process group and every descendant's group (Jupyter kernels start
    their own session, so killing the worker's group alone would leave a looping kernel behind)."""
    groups, descendants = {proc.pid}, []
    try:
        import psutil

        descendants = psutil.Process(proc.pid).children(recursive=True)
    except Exception:  # the worker already exited (psutil.NoSuchProcess), or no psutil
        pass
    for child in descendants:
        try:
            groups.add(os.getpgid(child.pid))
        except OSError:
            pass
    groups.discard(os.getpgrp())  # never our own group
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:  # the group is gone already
            pass
    for child in descendants:
        try:
            child.kill()
        except Exception:
            pass
    proc.wait()


def _last_error_line(log_path):
    if not log_path or not pathlib.Path(log_path).is_file():
        return ""
    lines = [l.strip() for l in pathlib.Path(log_path).read_text(errors="replace").splitlines()]
    errors = [l for l in lines if re.match(r"^[\w.]*(Error|Exception|Exit)\b.*:", l)]
    return (errors or [l for l in lines if l] or [""])[-1][:300]


def _num(x):
    return f"{float(x):g}"


def _number_cell_ids(path, name):
    """Replace the random cell ids that jupytext and otter write by numbered ones."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if "id" in cell:
            cell["id"] = f"{name}-{i:03d}"
    nbformat.write(nb, path)


def _repack_zip(src, dst):
    """Rewrite a zip with sorted members and fixed timestamps, so that its bytes are reproducible."""
    with zipfile.ZipFile(src) as zin:
        members = sorted(zin.namelist())
        contents = {m: (zin.read(m), zin.getinfo(m).external_attr) for m in members}
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for m in members:
            info = zipfile.ZipInfo(m, date_time=_ZIP_DATE)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, contents[m][1]
            zout.writestr(info, contents[m][0])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m seqlib.classroom", description=__doc__.split("\n\n")[0],
                                     epilog="Not a sandbox: student code runs with your permissions.")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("assign", help="write dist/<name>/student and dist/<name>/autograder")
    a.add_argument("names", nargs="*", help="exercise names to assign (default: all), e.g. 01_rnn")
    a.add_argument("--exercises", default="exercises", help="directory of master notebooks (*.md)")
    a.add_argument("--out", default="dist", help="output directory (default: dist)")
    g = sub.add_parser("grade", help="grade a directory of submissions into a CSV")
    g.add_argument("--autograder", required=True, help="dist/<name>/autograder/<name>-autograder.zip")
    g.add_argument("--submissions", required=True, help="directory of submitted .ipynb (or .zip) files")
    g.add_argument("--timeout", type=float, default=300.0, help="seconds per submission (default 300)")
    g.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default 1)")
    g.add_argument("--out", default="results.csv", help="CSV to write (default results.csv)")
    args = parser.parse_args(argv)
    if args.command == "assign":
        for target in assign(args.exercises, args.out, args.names or None):
            print(f"wrote {target}/student and {target}/autograder")
    else:
        grade(args.autograder, args.submissions, args.out, args.timeout, args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
