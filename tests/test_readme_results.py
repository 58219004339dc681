"""Every number of the README's results section is in a committed report (``docs/results/*.md``).

A README number with ``d`` decimals matches a report number that rounds to it at ``d`` decimals
(``-11.8`` is the report's ``-11.758``; halves round up, ``113.6`` is ``113.55``), so a number typed by hand, or left behind when a report is
regenerated, fails here.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

from helpers import REPO

#: A decimal number standing on its own (not part of a version, a name or a longer number).
NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+(?!\w|\.\d)")


def results_section() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Results so far", 1)[1].split("\n## ", 1)[0]
    return section.split("\n", 1)[1]  # below the heading (its torch version is no result)


def reported_numbers() -> set[str]:
    """Every number of the reports, also rounded to each shorter number of decimals."""
    text = " ".join(path.read_text() for path in (REPO / "docs" / "results").glob("*.md"))
    numbers = set()
    for word in NUMBER.findall(text):
        value, decimals = Decimal(word), len(word.split(".")[1])
        numbers.update(str(value.quantize(Decimal(1).scaleb(-d), ROUND_HALF_UP)) for d in range(1, decimals + 1))
    return numbers


def test_every_readme_result_is_in_a_report():
    numbers = NUMBER.findall(results_section())
    assert len(numbers) > 50  # the section is found and holds the studies' numbers
    reported = reported_numbers()
    missing = sorted({n for n in numbers if n not in reported})
    assert not missing, f"README numbers in no report under docs/results/: {missing}"
