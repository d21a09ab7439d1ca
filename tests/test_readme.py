"""The README's Python example runs as written (its report goes to a temporary folder)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)  # the example writes reports/my-trend-run relative to the cwd
    ns: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), ns)
    res = ns["res"]
    assert res.n_cols == 9 and res.n_bars > 8000
    assert (tmp_path / "reports" / "my-trend-run" / "report.html").is_file()


def test_readme_states_the_two_setup_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci
