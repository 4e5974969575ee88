"""Report-text scrubbing: presidio pattern recognisers (no NLP model) plus a study's own identifiers.

``TextScrubber().scrub(text, known)`` replaces names, MRNs, accession and other ids, phone numbers, addresses,
e-mails and dates with placeholders (``[NAME]`` ...) and counts what it replaced. Found spans of one kind that
touch ("John" + "Smith", "DOE, JOHN") become one placeholder; overlaps of different kinds are resolved by
presidio-anonymizer (the higher-scoring span keeps the overlap, the other is trimmed), so nothing found is left.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

from presidio_analyzer import AnalyzerEngine, RecognizerRegistry, RecognizerResult
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
from presidio_analyzer.nlp_engine import NoOpNlpEngine
from presidio_anonymizer import AnonymizerEngine, ConflictResolutionStrategy
from presidio_anonymizer.entities import OperatorConfig

from medclip.deid.identifiers import KnownIdentifiers
from medclip.deid.recognizers import build_recognizers
from medclip.errors import MedclipError

logger = logging.getLogger(__name__)

__all__ = ["PLACEHOLDERS", "DeidError", "Scrubbed", "TextScrubber", "scrub_text"]

# presidio entity -> (our kind, placeholder)
ENTITIES: dict[str, tuple[str, str]] = {
    "PERSON": ("name", "[NAME]"),
    "MRN": ("mrn", "[MRN]"),
    "ACCESSION": ("accession", "[ACCESSION]"),
    "ID": ("id", "[ID]"),
    "PHONE_NUMBER": ("phone", "[PHONE]"),
    "ADDRESS": ("address", "[ADDRESS]"),
    "DATE_TIME": ("date", "[DATE]"),
    "EMAIL_ADDRESS": ("email", "[EMAIL]"),
}
PLACEHOLDERS: dict[str, str] = dict(ENTITIES.values())
# KnownIdentifiers kinds -> presidio entity
_KNOWN_ENTITY = {
    "name": "PERSON",
    "id": "ID",
    "uid": "ID",
    "date": "DATE_TIME",
    "phone": "PHONE_NUMBER",
    "address": "ADDRESS",
    "email": "EMAIL_ADDRESS",
}
_KNOWN_SCORE = 1.0  # an exact match of the study's own identifier outranks any pattern
_JOIN_GAP = 3


class DeidError(MedclipError):
    """Scrubbing failed; the text must not be kept. ``reason`` is "deid_failed"; the message never holds the text."""

    reason = "deid_failed"


@dataclass(frozen=True)
class Scrubbed:
    """A scrubbed text; ``by_kind`` counts replacements per kind ("name", "mrn", ...), zero kinds omitted."""

    text: str
    replacements: int
    by_kind: dict[str, int] = field(default_factory=dict)


class _NoContextEnhancer(ContextAwareEnhancer):
    """Context lives inside the patterns (``phi`` groups); the no-op NLP engine gives no lemmas to enhance with."""

    def __init__(self) -> None:
        super().__init__(context_similarity_factor=0, min_score_with_context_similarity=0, context_prefix_count=0,
                         context_suffix_count=0)  # fmt: skip

    def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
        return raw_results


class TextScrubber:
    """Build once, reuse: compiles the recognisers; ``scrub`` only reads them, so threads may share one.

    Args:
        phone_regions: regions whose phone formats python-phonenumbers looks for (besides the US-style patterns).
        score_threshold: presidio results under this score are ignored.
    """

    def __init__(self, *, phone_regions: tuple[str, ...] = ("US",), score_threshold: float = 0.3) -> None:
        registry = RecognizerRegistry(supported_languages=["en"])
        for recognizer in build_recognizers(phone_regions=phone_regions):
            registry.add_recognizer(recognizer)
        # presidio's supported way to run without a spaCy model: the no-op NLP engine (tokens/lemmas are empty).
        nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self._analyzer = AnalyzerEngine(
                registry=registry,
                nlp_engine=nlp,
                supported_languages=["en"],
                context_aware_enhancer=_NoContextEnhancer(),
                default_score_threshold=score_threshold,
            )
        self._anonymizer = AnonymizerEngine()
        self._operators = {e: OperatorConfig("replace", {"new_value": p}) for e, (_, p) in ENTITIES.items()}
        self._entities = list(ENTITIES)

    def find(self, text: str, known: KnownIdentifiers | None = None) -> list[RecognizerResult]:
        """The spans that :meth:`scrub` replaces (merged per kind, not yet resolved across kinds)."""
        results = self._analyzer.analyze(text=text, language="en", entities=self._entities)
        if known:
            results += [RecognizerResult(_KNOWN_ENTITY[s.kind], s.start, s.end, _KNOWN_SCORE) for s in known.find(text)]
        return _join_touching(text, results)

    def scrub(self, text: str, known: KnownIdentifiers | None = None) -> Scrubbed:
        """``text`` with every identifier found replaced by its placeholder.

        Raises:
            TypeError: ``text`` is not a str.
            DeidError: an internal failure (not expected on any text); the caller rejects the report.
        """
        if not isinstance(text, str):
            raise TypeError(f"scrub() takes report text (str), got {type(text).__name__}")
        if not text.strip():
            return Scrubbed(text, 0, {})
        try:
            results = self.find(text, known)
            if not results:
                return Scrubbed(text, 0, {})
            out = self._anonymizer.anonymize(
                text=text,
                analyzer_results=results,
                operators=self._operators,
                conflict_resolution=ConflictResolutionStrategy.REMOVE_INTERSECTIONS,
            )
        except Exception as exc:  # fail closed: a text that could not be scrubbed is rejected, never kept as is
            raise DeidError(f"de-identification failed ({type(exc).__name__}); reject this report") from None
        by_kind: dict[str, int] = {}
        for item in out.items:
            kind = ENTITIES[item.entity_type][0]
            by_kind[kind] = by_kind.get(kind, 0) + 1
        return Scrubbed(out.text, len(out.items), dict(sorted(by_kind.items())))


def _join_touching(text: str, results: list[RecognizerResult]) -> list[RecognizerResult]:
    """One span for same-kind spans separated by at most a few spaces/commas on one line ("[NAME]" not two)."""
    out: list[RecognizerResult] = []
    by_entity: dict[str, list[RecognizerResult]] = {}
    for r in results:
        by_entity.setdefault(r.entity_type, []).append(r)
    for entity, spans in by_entity.items():
        spans.sort(key=lambda r: (r.start, -r.end))
        current = spans[0]
        for r in spans[1:]:
            gap = text[current.end : r.start] if r.start > current.end else ""
            if r.start <= current.end or (len(gap) <= _JOIN_GAP and gap.strip(" \t,.") == ""):
                current = RecognizerResult(entity, current.start, max(current.end, r.end), max(current.score, r.score))
            else:
                out.append(current)
                current = r
        out.append(current)
    return out


_DEFAULT: TextScrubber | None = None


def scrub_text(text: str, known: KnownIdentifiers | None = None) -> Scrubbed:
    """:meth:`TextScrubber.scrub` with a shared default scrubber (built on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = TextScrubber()
    return _DEFAULT.scrub(text, known)
