"""``--write-docs``: the benchmark writes its own results into docs/performance.md.

Why: a table copied by hand drifts from the code that made it (two different times for the same run,
a figure quoted without its machine). The benchmark replaces what lies between the two marker
comments with the table it just printed, headed by the date, the command line, the machine and how
long the run took, and leaves every other line of the chapter alone. Example::

    <!-- benchmark-results:begin -->
    (whatever an earlier run wrote)
    <!-- benchmark-results:end -->

becomes the same two markers around the new block. A file without both markers, in this order, is
refused with one line naming it, rather than appended to.
"""

from __future__ import annotations

import re
from pathlib import Path

BEGIN = "<!-- benchmark-results:begin -->"
END = "<!-- benchmark-results:end -->"
DEFAULT = Path(__file__).resolve().parents[2] / "docs" / "performance.md"


def block(rendered: str, *, date: str, command: str, seconds: float | None) -> str:
    """The markdown the markers enclose: ``rendered`` is report.render()'s text (machine, table, targets)."""
    machine, _, rest = rendered.partition("\n")
    table, _, targets = rest.strip("\n").partition("\n\n")
    took = f", {seconds / 60:.0f} minutes" if seconds is not None and seconds >= 90 else (
        f", {seconds:.0f} s" if seconds is not None else "")
    head = f"Measured on {date} with `{command}`{took}. {machine}."
    parts = [head, "", table]
    if targets.strip():
        parts += ["", "```text", targets.strip("\n"), "```"]
    return "\n".join(parts)


def splice(doc: str, new: str, where: str = "docs/performance.md") -> str:
    """``doc`` with the text between the markers replaced by ``new``."""
    m = re.search(rf"^{re.escape(BEGIN)}\n(.*?)^{re.escape(END)}$", doc, re.M | re.S)
    if not m:
        raise ValueError(f"{where}: no {BEGIN} ... {END} pair to write the results between")
    return doc[: m.start(1)] + new.rstrip("\n") + "\n" + doc[m.end(1):]


def write(path: Path, new: str) -> None:
    path.write_text(splice(path.read_text(), new, str(path)))
