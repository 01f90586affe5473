"""Refresh the output blocks of a tutorial: ``python docs/tutorials/refresh_outputs.py PAGE``.

Runs the page's Python blocks in order in one namespace (in a scratch directory) and writes
what each prints into a ```text title="output"``` block right after it (tests/test_tutorials.py
checks that the shown output is what the blocks print). Run it after a change that moves the
numbers, then reread the prose around them.
"""

import contextlib
import io
import os
import re
import sys
import tempfile
from pathlib import Path

OUTPUT = '```text title="output"\n'


def refresh(page: str) -> None:
    path = Path(__file__).parent / f"{page}.md"
    text = re.sub(r'\n```text title="output"\n.*?```\n', "\n", path.read_text(), flags=re.S)
    parts = re.split(r"(```python\n.*?```\n)", text, flags=re.S)
    namespace: dict = {"__name__": "tutorial"}
    out = []
    here = os.getcwd()
    os.chdir(tempfile.mkdtemp())
    try:
        for part in parts:
            out.append(part)
            if part.startswith("```python\n"):
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    exec(compile(part[len("```python\n") : -4], str(path), "exec"), namespace)
                if buf.getvalue():
                    out.append("\n" + OUTPUT + buf.getvalue() + "```\n")
    finally:
        os.chdir(here)
    path.write_text("".join(out))


if __name__ == "__main__":
    for name in sys.argv[1:]:
        refresh(name.removesuffix(".md"))
