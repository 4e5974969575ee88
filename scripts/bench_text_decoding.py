"""How often short reports come back exactly: medclip's decode_text vs a statistical detector, as JSON.

The texts are short clinical lines (names with accents, "°C", "±", dashes), encoded in each codec a report archive
holds. A text counts as exact when decoding its bytes gives the original string back. charset-normalizer is the
detector compared (``pip install charset-normalizer``); it is skipped when absent. The numbers justify the fixed
fallback order in ``medclip/io/text.py``.

    python scripts/bench_text_decoding.py
"""

from __future__ import annotations

import json
import sys

from medclip.io.text import decode_text

WESTERN = [
    "Patient: José Müller. Temp 38.5°C. FINDINGS: No focal consolidation. IMPRESSION: Normal.",
    "FINDINGS: Heart size normal. Café-au-lait spot noted. IMPRESSION: No acute disease.",
    "IMPRESSION: Stable 5 mm nodule, ± 1 mm. Dr. Françoise Lefèvre.",
    "Befund: Herz normal groß. Zwerchfell glatt. Beurteilung: Unauffälliger Thorax, 2° Rippe.",
    "FINDINGS: Small effusion (approx. 200 ml) – unchanged. IMPRESSION: Effusion.",
    "Temp 39°C.",
    "Naïve lungs. Señor Núñez. FINDINGS: clear.",
]
CENTRAL = [
    "Pacjent: Łukasz Żółć. Wynik: płuca bez zmian, serce prawidłowej wielkości.",
    "Pacient: Jiří Dvořák. Nález: plíce bez ložiskových změn, srdce nezvětšené.",
    "Beteg: Kovács Ödön. Lelet: tüdő ép, szív nem nagyobb. Vélemény: negatív.",
]
CASES = {
    "utf-8": WESTERN + CENTRAL,
    "utf-16": WESTERN,
    "cp1252": WESTERN,
    "latin-1": [t for t in WESTERN if "–" not in t],
    "cp1250": CENTRAL,
    "iso8859_2": CENTRAL,
}


def _medclip(raw: bytes) -> str | None:
    return decode_text(raw)[0]


def _detector():
    try:
        import charset_normalizer
    except ImportError:
        return None

    def detect(raw: bytes) -> str | None:
        best = charset_normalizer.from_bytes(raw).best()
        return str(best) if best is not None else None

    return detect


def main() -> int:
    decoders = {"medclip.decode_text": _medclip}
    if (detect := _detector()) is not None:
        decoders["charset_normalizer"] = detect
    out: dict[str, dict[str, str]] = {}
    for name, decode in decoders.items():
        out[name] = {}
        for codec, texts in CASES.items():
            exact = sum(decode(t.encode(codec)) == t for t in texts)
            out[name][codec] = f"{exact}/{len(texts)}"
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
