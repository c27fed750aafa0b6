"""ODBC connection strings: split into pairs, quote a value, join again. Pure (no I/O).

Used by the SQL Server settings (:mod:`holocron_scrapy.db.sqlserver`), the engine URL mapping
(:mod:`holocron_scrapy.db.engine`) and the secret masking (:mod:`holocron_scrapy.secrets`).

Settings read: none. Stats written: none.
"""

from __future__ import annotations

import re

from holocron_scrapy.errors import ConfigError


def parse_odbc(conn_str: str) -> list[tuple[str, str]]:
    """Split an ODBC connection string into ``(key, value)`` pairs (``{...}`` values kept raw)."""
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(conn_str)
    while i < n:
        eq = conn_str.find("=", i)
        if eq < 0:
            if conn_str[i:].strip(" ;"):
                raise ConfigError("malformed ODBC connection string (expected KEY=VALUE;...)", key="conn_str")
            break
        key = conn_str[i:eq].strip(" ;")
        i = eq + 1
        if conn_str[i : i + 1] == "{":
            j = i + 1
            while True:
                close = conn_str.find("}", j)
                if close < 0:
                    raise ConfigError("malformed ODBC connection string (unclosed '{')", key="conn_str")
                if conn_str[close + 1 : close + 2] == "}":
                    j = close + 2
                    continue
                break
            value = conn_str[i + 1 : close].replace("}}", "}")
            i = close + 1
            semi = conn_str.find(";", i)
            i = n if semi < 0 else semi + 1
        else:
            semi = conn_str.find(";", i)
            end = n if semi < 0 else semi
            value = conn_str[i:end].strip()
            i = end + 1
        if key:
            pairs.append((key, value))
    return pairs


def odbc_value(value: str) -> str:
    """Quote an ODBC attribute value with braces when it needs it."""
    if value and not re.search(r"[;{}=\s]", value) and value == value.strip():
        return value
    return "{" + value.replace("}", "}}") + "}"


def format_odbc(pairs: list[tuple[str, str]]) -> str:
    return ";".join(f"{key}={odbc_value(value)}" for key, value in pairs) + ";"


def odbc_get(pairs: list[tuple[str, str]], *names: str) -> str | None:
    wanted = {name.lower() for name in names}
    for key, value in pairs:
        if key.lower() in wanted:
            return value
    return None


def is_freetds(driver: str) -> bool:
    lowered = driver.lower()
    return "freetds" in lowered or "libtdsodbc" in lowered


