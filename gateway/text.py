"""The rule for the names of administrators that the command line stores.

An administrator's name enters through ``--operator``, the login name and the
``created_by`` column of a link import, and it is stored in the link table,
the revocation feed and the SSO log. ``operator_problem`` is the one rule for
all of them.
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
