"""Word lists for the de-identifiers: titles, name affixes, and ordinary words that are also names."""

from __future__ import annotations

__all__ = ["COMMON_WORDS", "NAME_AFFIXES", "TITLES", "wordlist"]


def wordlist(text: str) -> list[str]:
    """The whitespace-separated words of a long literal (keeps long word lists readable)."""
    return text.split()


TITLES = frozenset({"dr", "drs", "mr", "mrs", "ms", "miss", "prof", "doctor", "professor"})
NAME_AFFIXES = TITLES | {
    "md", "do", "phd", "rn", "np", "pa", "jr", "sr", "ii", "iii", "iv", "dds", "dmd", "mba", "facr", "frcr", "mbbs",
    "frcp", "mph", "ms", "crna", "rt", "rtr",
}  # fmt: skip

# Surnames and given names that are also ordinary (often clinical) words. Such a component of a known name is
# replaced only when capitalised and next to another component or a title, so "white matter", "mass", "clear
# lungs" and "may represent" survive while "Dr. White" and "May Clear" do not.
COMMON_WORDS = frozenset(
    wordlist(
        """
    white black brown green gray grey may mass clear hope long short small little young old rice hill wall bone
    heart lung bell cole head foot hand arm leg rib neck back front side low high bright dark light hard soft
    fine sharp wise hart hunter baker cook fisher mason miller porter tanner turner walker wood woods field fields
    ford banks rivers stone stones marsh lake pond brook rose lily daisy iris ivy holly hazel dawn eve faith grace
    joy joyce patience prudence charity summer winter spring autumn april june july august march will bill mark
    art cliff dale glen grant guy hale herb jack jimmy lance neil pat ray rob rod sandy victor frank earnest
    major minor lord king prince duke earl bishop church chase cross link page price love moss nash page rich
    sage strong stout swift wells west north south east gold silver steel iron lamb fox wolf bird crane drake
    swan hawk finch wren parrot cotton lane street way path read reed bass pike trout salmon basin norman
    english french german welsh irish scott mills shield shields bond bonds young youngs noble gentle sterling
    ash birch oak elm pine cedar bush thorn moore more most best good goodman hall hallway bridge bridges
    ward wards hospital clinic doctor nurse patient case cases lucky hardy hurt keen ill able
    blank plain post early late rush sharpe stable stern tubb vale vial bath beam bolt bay core crest dome
    gap lamp line lines lobe node nodes pool ring root shaft sheath sheet stem tip tube tubes vane view views
    film films scan scans spot spots mark marks shadow shadows clot clots cyst ridge ridges trace traces
    level levels base bases apex notch band bands string strings knot knots bud buds sac sacs
    """
    )
)
