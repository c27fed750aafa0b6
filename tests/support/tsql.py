"""T-SQL parse checks with sqlfluff (dialect ``tsql``), for SQL Server code that cannot run here.

:func:`unparsable_statements` parses named statements as one script of ``GO`` batches (one parse:
sqlfluff is slow to start) and, only when that fails, each statement alone, to name the ones that
do not parse (an unparsable segment, or a parse error).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import sqlfluff
import sqlfluff.api


def _parses(sql: str) -> bool:
    try:
        return "unparsable" not in json.dumps(sqlfluff.parse(sql, dialect="tsql"))
    except sqlfluff.api.APIParsingError:
        return False


def unparsable_statements(statements: Iterable[tuple[str, str]]) -> list[str]:
    """The names of the ``(name, sql)`` *statements* sqlfluff (tsql) cannot parse; [] when all parse."""
    statements = list(statements)
    if _parses("".join(f"{sql};\nGO\n" for _name, sql in statements)):
        return []
    return [name for name, sql in statements if not _parses(sql)]
