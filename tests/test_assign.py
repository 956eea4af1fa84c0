"""`make assign` and grading: the student notebooks hold no solution code, the autograder gives
the solutions full marks and the blanks none, and a submission that crashes or hangs is reported
without stopping the grading of the others.

Costs about a minute and a half on 2 cores: `otter assign` takes a few seconds per exercise, and
`otter run` takes 10-20 s per submission (a kernel starts and imports torch).
"""
import csv
import pathlib
import re
import subprocess
import sys
import time

import nbformat
import pytest

from seqlib.classroom import question_points

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXERCISES = sorted((ROOT / "exercises").glob("*.md"))
HANG_TIMEOUT = 60  # s: well above the 10-25 s a real submission takes on a busy 2-core machine
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "# SOLUTION", "BEGIN QUESTION", "BEGIN TESTS",
           "ASSIGNMENT CONFIG", "BEGIN TEST CONFIG")


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "seqlib.classroom", "assign", "--exercises",
                    str(ROOT / "exercises"), "--out", str(out)], check=True, cwd=ROOT)
    print(f"\nassign: {len(EXERCISES)} exercise notebook(s) in {time.monotonic() - start:.1f} s")
    return out


def _code_cells(md_path):
    """The sources of the ```{code-cell} blocks of a Jupytext MyST notebook."""
    return re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```", md_path.read_text(), flags=re.M | re.S)


def _solution_lines(md_path):
    lines, inside = [], False
    for cell in _code_cells(md_path):
        for line in cell.splitlines():
            s = line.strip()
            if s.endswith("# BEGIN SOLUTION"):
                inside = True
            elif s.endswith("# END SOLUTION"):
                inside = False
            elif inside and s:
                lines.append(s)
            elif re.search(r"# ?SOLUTION$", s):
                lines.append(re.sub(r"\s*# ?SOLUTION$", "", s))
    return lines


def _hidden_test_names(md_path):
    return [m.group(1) for cell in _code_cells(md_path)
            if re.match(r'"""\s*# BEGIN TEST CONFIG', cell) and re.search(r"^hidden: *true", cell, re.M)
            for m in [re.search(r"^def (test_\w+)", cell, re.M)]]


@pytest.mark.parametrize("source", EXERCISES, ids=lambda p: p.stem)
def test_student_notebook_has_no_solution_code(dist, source):
    name = source.stem
    student = dist / name / "student" / f"{name}.ipynb"
    text = student.read_text()
    for marker in MARKERS:
        assert marker not in text, f"{student}: the marker {marker!r} was left in"
    nb = nbformat.read(student, as_version=4)
    student_lines = {l.strip() for c in nb.cells if c.cell_type == "code" for l in c.source.splitlines()}
    public_tests = "\n".join(nb.metadata.get("otter", {}).get("tests", {}).values())
    student_lines |= {l.strip() for l in public_tests.splitlines()}
    solution = _solution_lines(source)
    assert len(solution) > 20, f"found only {len(solution)} solution lines in {source}"
    leaked = [l for l in solution if l in student_lines]
    assert not leaked, f"{student}: solution lines leaked into the student version: {leaked}"
    for test_name in _hidden_test_names(source):
        assert test_name not in text, f"{student}: hidden test {test_name} is visible"
    answers = [c for c in nb.cells if "otter_answer_cell" in c.metadata.get("tags", [])]
    assert answers and all("..." in c.source for c in answers)


@pytest.mark.parametrize("source", EXERCISES, ids=lambda p: p.stem)
def test_autograder_written(dist, source):
    name = source.stem
    zip_path = dist / name / "autograder" / f"{name}-autograder.zip"
    assert zip_path.is_file()
    points = question_points(zip_path)
    assert len(points) >= 5, f"{name}: expected at least five exercises, got {sorted(points)}"
    assert (dist / name / "autograder" / f"{name}.ipynb").is_file()


@pytest.mark.parametrize("source", EXERCISES, ids=lambda p: p.stem)
def test_instructor_guide_lists_every_question_with_its_points(dist, source):
    guide = (ROOT / "book" / "instructor.md").read_text()
    name = source.stem
    for question, points in question_points(dist / name / "autograder" / f"{name}-autograder.zip").items():
        row = re.search(rf"^\|[^\n]*`{question}`[^\n]*\|\s*{re.escape(points)}\s*\|\s*$", guide, re.M)
        assert row, f"book/instructor.md: no table row for `{question}` with {points} points"


def _with_cell(nb_path, code, out_path):
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell(code))  # after the otter init and the imports
    nbformat.write(nb, out_path)


def _grade(autograder, submissions, out_csv, timeout, jobs=3):
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "seqlib.classroom", "grade", "--autograder", str(autograder),
                    "--submissions", str(submissions), "--timeout", str(timeout), "--jobs", str(jobs),
                    "--out", str(out_csv)], check=True, cwd=ROOT)
    with open(out_csv, newline="") as f:
        rows = {r["submission"]: r for r in csv.DictReader(f)}
    print(f"grade: {len(rows)} submissions in {time.monotonic() - start:.1f} s; per submission (s): "
          + ", ".join(f"{k} {r['seconds']}" for k, r in rows.items()))
    return rows


def _dead(pid):
    try:
        import psutil

        return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except Exception:  # psutil.NoSuchProcess between the two calls
        return True


@pytest.mark.parametrize("source", EXERCISES, ids=lambda p: p.stem)
def test_grading_solutions_blanks_crashes_and_hangs(dist, source, tmp_path):
    name = source.stem
    autograder = dist / name / "autograder" / f"{name}-autograder.zip"
    solution, blank = dist / name / "autograder" / f"{name}.ipynb", dist / name / "student" / f"{name}.ipynb"
    subs = tmp_path / "submissions"
    subs.mkdir()
    (subs / "e_solution.ipynb").write_bytes(solution.read_bytes())
    (subs / "d_blank.ipynb").write_bytes(blank.read_bytes())
    first = source == EXERCISES[0]  # crashes and hangs cost time: try them on one exercise only
    if first:
        pids = tmp_path / "hang.pids"
        _with_cell(blank, "import os\nos._exit(1)", subs / "b_crashes.ipynb")
        _with_cell(blank, "import os, pathlib, subprocess\n"
                          "child = subprocess.Popen(['sleep', '600'])\n"
                          f"pathlib.Path(r'{pids}').write_text(f'{{os.getpid()}} {{child.pid}}')\n"
                          "while True:\n    pass", subs / "a_hangs.ipynb")
        (subs / "c_not_a_notebook.ipynb").write_text("this is not a notebook")
    rows = _grade(autograder, subs, tmp_path / "results.csv", HANG_TIMEOUT if first else 300)
    points = question_points(autograder)

    sol = rows["e_solution.ipynb"]
    assert sol["status"] == "ok", sol
    for question, possible in points.items():
        assert float(sol[question]) == float(possible), f"the solution lost points on {question}: {sol}"
    assert float(sol["score"]) == float(sol["possible"]) == sum(map(float, points.values()))

    blank_row = rows["d_blank.ipynb"]
    assert blank_row["status"] == "ok", blank_row
    for question in points:
        assert float(blank_row[question]) == 0, f"the blank scored on {question}: {blank_row}"

    if first:
        assert rows["b_crashes.ipynb"]["status"] == "error"
        assert "Kernel died" in rows["b_crashes.ipynb"]["message"]
        assert rows["c_not_a_notebook.ipynb"]["status"] == "error"
        assert rows["a_hangs.ipynb"]["status"] == "timeout"
        assert all(rows["a_hangs.ipynb"][q] == "" for q in points)
        kernel_pid, child_pid = map(int, pids.read_text().split())
        for pid in (kernel_pid, child_pid):
            assert _dead(pid), f"process {pid} of the hanging submission outlived the time limit"
