"""Rules for the free text that administrators type, and for showing it again.

An administrator's name enters through ``--operator``, the login name and the
``created_by`` column of a link import, and it is stored in the link table,
the revocation feed and the SSO log. ``operator_problem`` is the one rule for
all of them. Names written before the rule existed may break it, so the
output side guards itself too: ``spreadsheet_cell`` for CSV files and
``terminal_text`` for lines printed to a terminal.
"""

from __future__ import annotations

import unicodedata

from gateway.storage.tables import CREATED_BY_LENGTH, REVOKED_BY_LENGTH

#: Maximum length of an administrator's name, so that it fits every column
#: that stores one.
OPERATOR_LENGTH = min(CREATED_BY_LENGTH, REVOKED_BY_LENGTH)

#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_STARTS = frozenset("=+-@")

#: Unicode categories of characters that a terminal does not show as
#: themselves: controls (ESC, BEL, tab, newline, DEL, C1), invisible
#: formatting such as bidirectional overrides, line and paragraph
#: separators, and the lone surrogates that stand for bytes that are not
#: UTF-8 in a command line argument.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

_NAMED_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def operator_problem(name: str) -> str | None:
    """Return why ``name`` cannot be stored as an administrator's name, or None.

    The message completes a sentence that starts with what was checked, such
    as ``--operator`` or ``created_by``.
    """
    if not name.strip():
        return "must not be empty"
    if len(name) > OPERATOR_LENGTH:
        return f"is {len(name)} characters long, the maximum is {OPERATOR_LENGTH}"
    for position, char in enumerate(name, start=1):
        category = unicodedata.category(char)
        if category == "Cs":
            return (
                f"{name!r} holds bytes that are not UTF-8 at position {position}: "
                "write the name in UTF-8"
            )
        if category in HIDDEN_CATEGORIES:
            return (
                f"{name!r} contains the control character U+{ord(char):04X} at "
                f"position {position}: use visible characters and spaces only"
            )
    if name != name.strip():
        return f"{name!r} starts or ends with a space: leave the spaces out"
    if _formula_start(name):
        return (
            f"{name!r} starts with {name[0]!r}, which makes a spreadsheet read "
            "the exported cell as a formula: start the name with a letter or digit"
        )
    return None


def _formula_start(text: str) -> bool:
    # NFKC folds look-alikes such as the full-width equals sign.
    return bool(text) and unicodedata.normalize("NFKC", text[0])[:1] in FORMULA_STARTS


def spreadsheet_cell(text: str) -> str:
    """Return a free-text CSV cell that a spreadsheet shows as text.

    A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
    return gets a leading apostrophe, which spreadsheets take as "this is
    text". ``operator_problem`` refuses such names, so only rows stored
    before that rule need it.
    """
    if text[:1] in ("\t", "\r") or _formula_start(text):
        return "'" + text
    return text


def terminal_text(text: str) -> str:
    """Return ``text`` with every character a terminal would act on escaped.

    Tab, newline and carriage return become ``\\t``, ``\\n`` and ``\\r``,
    other hidden characters ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``, and a
    backslash ``\\\\``, so that the escaped text reads back unambiguously.
    """
    if text.isprintable() and "\\" not in text:
        return text
    shown = []
    for char in text:
        if char in _NAMED_ESCAPES:
            shown.append(_NAMED_ESCAPES[char])
        elif unicodedata.category(char) in HIDDEN_CATEGORIES:
            code = ord(char)
            if code < 0x100:
                shown.append(f"\\x{code:02x}")
            elif code < 0x10000:
                shown.append(f"\\u{code:04x}")
            else:
                shown.append(f"\\U{code:08x}")
        else:
            shown.append(char)
    return "".join(shown)
