"""A text's words replaced, its density in tokens kept: what a check of a body's shape says
instead of the body (glan.llm.witness.shape_check).

An endpoint's limits are in tokens, not characters, and text differs in tokens per character
(English prose about 5, LaTeX and code about 2, Chinese under 1): a neutral filler as long as
the body in characters may be a third of its tokens. So each character is replaced by one of
its own class: ASCII letters by a fixed permutation (rot13, case kept), digits by other digits,
another script's letters by a nearby letter of the same script and category; whitespace,
punctuation, symbols and marks are kept, so LaTeX keeps its backslashes and braces and code
its layout. What the body says is gone (its words no longer match the vocabulary); how it
breaks into tokens is kept or made denser (scrambled words split into more pieces), which is
the safe side: a denser check that fails defers or stops the run rather than giving a body up.
"""

from __future__ import annotations

import string
import unicodedata

#: How far from a letter of another script its stand-in is looked for.
_NEAR = 8

_ROT13 = str.maketrans(
    string.ascii_lowercase + string.ascii_uppercase + string.digits,
    "nopqrstuvwxyzabcdefghijklm" + "NOPQRSTUVWXYZABCDEFGHIJKLM" + "3456789012",
)


def _script(name: str) -> str:
    """A character's script, as the first word of its Unicode name (GREEK, CYRILLIC, CJK...)."""
    return name.split(" ", 1)[0]


def _stand_in(code: int) -> int:
    """A letter near `code` of its script and category, or `code` itself when it is no letter
    or none is near (kept: its density is its own)."""
    char = chr(code)
    category = unicodedata.category(char)
    name = unicodedata.name(char, "")
    if not category.startswith("L") or not name:
        return code
    script = _script(name)
    for step in range(1, _NEAR + 1):
        for other in (code + step, code - step):
            if not 0 <= other <= 0x10FFFF:
                continue
            near = chr(other)
            if (
                unicodedata.category(near) == category
                and _script(unicodedata.name(near, "")) == script
            ):
                return other
    return code


class _Table(dict[int, int]):
    """str.translate's table: ASCII fixed, every other character looked up once."""

    def __missing__(self, code: int) -> int:
        out = self[code] = _stand_in(code)
        return out


_TABLE = _Table(_ROT13)


def disguise(text: str) -> str:
    """`text` with every letter and digit replaced by another of its class (module docstring);
    as long as `text`, and the same each time."""
    return text.translate(_TABLE)
