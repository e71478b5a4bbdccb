"""Help epilogs: an ``exit codes:`` table (:func:`common.exit_codes.help_text`) kept row by row and
wrapped to the 80 columns of ``--help``. Its own module so that a group takes it without the others'
imports (``monitor`` must not depend on the client: ``dvc.yaml`` lists what a stage imports).
"""

from __future__ import annotations

import textwrap


def exit_codes_epilog(table: str) -> str:
    """``table`` as a click epilog: ``\\b`` keeps its rows, each wrapped with a hanging indent."""
    rows = [row for line in table.splitlines() for row in textwrap.wrap(line, 78, subsequent_indent=" " * 6)]
    return "\b\n" + "\n".join(rows)
