"""
Keep the code in ``README.md`` and ``docs/*.md`` identical to the files it comes from, which tests run.

A doc quotes code the way official Airflow providers do, between ``# [START name]`` and ``# [END name]``
markers of a source file (an example DAG, or a test), announced by an HTML comment right before the fence::

    <!-- snippet: example_dags/example_kling_text_to_video.py#howto_operator_kling_submit -->
    ```python
    ...the lines between the markers, dedented...
    ```

``python scripts/doc_snippets.py`` rewrites every quoted block from its source; ``--check`` only reports
the blocks that differ (``tests/test_example_dags.py`` runs the check, so docs cannot rot).
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"


def documents() -> list[Path]:
    """Return the Markdown files whose snippets are kept in sync: ``README.md`` and ``docs/*.md``."""
    return [path for path in [REPO_ROOT / "README.md", *sorted(DOCS.glob("*.md"))] if path.exists()]


SNIPPET = re.compile(
    r"(?P<head><!-- snippet: (?P<path>[^#\s]+)#(?P<name>\w+) -->\n```(?P<lang>\w*)\n)"
    r"(?P<body>.*?)(?P<tail>^```)",
    re.DOTALL | re.MULTILINE,
)
_MARKER = re.compile(r"^\s*# \[(?:START|END) \w+\]\s*$")


class SnippetError(ValueError):
    """A snippet names a file or a marker that does not exist."""


@dataclass(frozen=True)
class Snippet:
    """One quoted block of a doc.

    :param doc: the doc file.
    :param source: the quoted file, relative to the repository.
    :param name: the marker name.
    :param body: the block's current text.
    """

    doc: Path
    source: str
    name: str
    body: str


def extract(source: Path, name: str) -> str:
    """
    Return the lines between ``# [START name]`` and ``# [END name]`` of ``source``, dedented.

    Nested marker lines are left out.

    :param source: the file.
    :param name: the marker name.
    :raises SnippetError: when either marker is missing.
    """
    lines = source.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == f"# [START {name}]"]
    ends = [i for i, line in enumerate(lines) if line.strip() == f"# [END {name}]"]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise SnippetError(f"{source}: no single [START {name}] ... [END {name}] pair")
    body = [line for line in lines[starts[0] + 1 : ends[0]] if not _MARKER.match(line)]
    return textwrap.dedent("\n".join(body)).strip("\n") + "\n"


def snippets(doc: Path) -> list[Snippet]:
    """Return the quoted blocks of one doc.

    :param doc: the Markdown file.
    """
    text = doc.read_text()
    return [Snippet(doc, match["path"], match["name"], match["body"]) for match in SNIPPET.finditer(text)]


def render(doc: Path, root: Path = REPO_ROOT) -> str:
    """Return the doc's text with every quoted block refreshed from its source.

    :param doc: the Markdown file.
    :param root: the directory the sources are relative to.
    """

    def refresh(match: re.Match[str]) -> str:
        return match["head"] + extract(root / match["path"], match["name"]) + match["tail"]

    return SNIPPET.sub(refresh, doc.read_text())


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or ``--check``) the snippets of ``README.md`` and ``docs/*.md``.

    :param argv: the arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="report stale snippets, change nothing")
    args = parser.parse_args(argv)
    stale = []
    for doc in documents():
        text = render(doc)
        if text != doc.read_text():
            stale.append(doc)
            if not args.check:
                doc.write_text(text)
    for doc in stale:
        print(f"{'stale' if args.check else 'updated'}: {doc.relative_to(REPO_ROOT)}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
