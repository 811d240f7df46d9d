"""What a fresh interpreter has imported after running some code: the parse-path import checks' probe."""

from __future__ import annotations

import json
import subprocess
import sys


def modules_after(code: str) -> set[str]:
    """
    Run ``code`` in a new interpreter and return the names in its ``sys.modules`` afterwards.

    :param code: Python statements (imports, usually).
    """
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.splitlines()[-1]))
