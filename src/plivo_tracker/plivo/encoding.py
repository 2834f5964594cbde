"""How Plivo encodes and splits a text, pure: GSM-7 or UCS-2, and how many segments it bills.

plivo-protocol.md §1.1: a GSM-7 text fits 160 septets in one segment, 153 per segment once
split (an extension-table character costs two); anything else is UCS-2, 70 UTF-16 code units
in one segment, 67 per segment once split. The sending side predicts the parts a text costs
with it, and the simulator bills texts with it, so both count the way Plivo does.
"""

from __future__ import annotations

from dataclasses import dataclass

# GSM 03.38 basic character set, and the extension table (each extension char costs 2 septets).
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = set("^{}\\[~]|€\f")

MAX_UCS2_CHARS = 737  # the longest Unicode text Plivo takes


@dataclass(frozen=True, slots=True)
class TextInfo:
    encoding: str  # "GSM-7" or "UCS-2"
    length: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def text_info(text: str) -> TextInfo:
    """How Plivo will encode and split `text` (plivo-protocol.md §1.1: 160/153, 70/67)."""
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in text):
        length = sum(2 if ch in _GSM_EXTENDED else 1 for ch in text)
        single, part, encoding = 160, 153, "GSM-7"
    else:
        length = len(text.encode("utf-16-le")) // 2
        single, part, encoding = 70, 67, "UCS-2"
    segments = 1 if length <= single else -(-length // part)
    return TextInfo(encoding, length, segments)
