"""Rendering of the synthetic body-map sketches (:mod:`medclip.synth.sketch.archive`): body outlines and symptom marks.

``render_sketch(regions, rng)`` draws one image: a FRONT view in the left half, a BACK view in the right half. The
front view faces the viewer, so the patient's left is on the viewer's RIGHT; the back view shows the patient from
behind, so the patient's left is on the viewer's LEFT. Faces are drawn on the front view only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from medclip.errors import InputError
from medclip.registry import did_you_mean

__all__ = ["MARK_STYLES", "REGIONS", "REGION_VIEWS", "VIEWS", "render_sketch"]

REGIONS: tuple[str, ...] = (
    "head", "neck", "chest_left", "chest_right", "chest_centre", "abdomen_ruq", "abdomen_luq", "abdomen_rlq",
    "abdomen_llq", "upper_back", "lower_back", "arm_left", "arm_right", "hand_left", "hand_right", "leg_left",
    "leg_right", "foot_left", "foot_right",
)  # fmt: skip
VIEWS: tuple[str, ...] = ("front", "back")
MARK_STYLES: tuple[str, ...] = ("fill", "hatch", "scribble", "circle", "dots")
_FRONT_ONLY = ("chest_left", "chest_right", "chest_centre", "abdomen_ruq", "abdomen_luq", "abdomen_rlq", "abdomen_llq")
REGION_VIEWS: dict[str, tuple[str, ...]] = {
    r: ("front",) if r in _FRONT_ONLY else ("back",) if r.endswith("_back") else VIEWS for r in REGIONS
}
"""The views each region can be drawn on (chest and abdomen: front only; upper and lower back: back only)."""
_SPEC_KEYS = ("style", "views", "width")


# --------------------------------------------------------------------------------------------- geometry
def _ellipse(cx: float, cy: float, rx: float, ry: float, *, angle: float = 0.0, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def _limb(p0: np.ndarray, p1: np.ndarray, w0: float, w1: float, t0: float = 0.0, t1: float = 1.0) -> np.ndarray:
    """Quadrilateral along p0 -> p1 between fractions t0..t1, half-width tapering from w0 to w1."""
    d = p1 - p0
    n = np.array([-d[1], d[0]]) / np.hypot(*d)
    a, b = p0 + t0 * d, p0 + t1 * d
    wa, wb = w0 + (w1 - w0) * t0, w0 + (w1 - w0) * t1
    return np.array([a + n * wa, b + n * wb, b - n * wb, a - n * wa])


@dataclass(frozen=True)
class _Body:
    """Proportions in units of body height; x > 0 is the PATIENT's left, y runs down from the top of the head."""

    head: float  # head half-width
    shoulder: float
    waist: float
    hip: float
    arm_angle: tuple[float, float]  # abduction from vertical in radians: (right arm, left arm)
    spread: float  # how far apart the legs stand

    @property
    def hh(self) -> float:  # head half-height
        return self.head * 1.2

    @property
    def sy(self) -> float:  # shoulder line
        return 2 * self.hh + 0.035

    def arm(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """Shoulder joint and wrist of the arm on side ``s`` (+1 patient's left, -1 right)."""
        joint = np.array([s * (self.shoulder - 0.018), self.sy + 0.022])
        theta = self.arm_angle[s > 0]
        return joint, joint + 0.29 * np.array([s * np.sin(theta), np.cos(theta)])

    def leg(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        return np.array([s * 0.05, 0.5]), np.array([s * (0.035 + 1.4 * self.spread), 0.905])

    def hand(self, s: int) -> np.ndarray:
        joint, wrist = self.arm(s)
        d = (wrist - joint) / np.hypot(*(wrist - joint))
        c = wrist + 0.03 * d
        return _ellipse(c[0], c[1], 0.019, 0.033, angle=-np.arctan2(d[0], d[1]))

    def foot(self, s: int, view: str) -> np.ndarray:
        x = s * (0.045 + 1.4 * self.spread)
        return _ellipse(x, 0.935, 0.03, 0.017) if view == "front" else _ellipse(x - s * 0.01, 0.93, 0.02, 0.02)

    def parts(self, view: str) -> list[np.ndarray]:
        """Filled polygons whose union is the silhouette."""
        sh, sy, w, h = self.shoulder, self.sy, self.waist, self.hip
        half = [
            (0.026, sy - 0.012),
            (sh * 0.8, sy),
            (sh, sy + 0.025),
            (sh * 0.93, sy + 0.09),
            (w, 0.38),
            (h, 0.47),
            (h * 0.9, 0.51),
        ]
        torso = np.array([(-x, y) for x, y in half] + [(0.0, 0.535)] + [(x, y) for x, y in reversed(half)])
        out = [
            _ellipse(0, self.hh, self.head, self.hh),
            np.array([(-0.026, 2 * self.hh - 0.01), (0.026, 2 * self.hh - 0.01), (0.026, sy), (-0.026, sy)]),
            torso,
        ]
        for s in (-1, 1):
            joint = self.arm(s)[0]
            out.append(_ellipse(joint[0], joint[1] + 0.004, 0.027, 0.027, n=16))  # rounds the shoulder
            out += [_limb(*self.arm(s), 0.028, 0.017), self.hand(s), _limb(*self.leg(s), 0.045, 0.016)]
            out.append(self.foot(s, view))
        return out

    def region(self, region: str, view: str, extent: tuple[float, float]) -> np.ndarray:
        """Polygon a mark on ``region`` roughly covers; limbs are marked between fractions ``extent``."""
        part, _, side = region.partition("_")
        s = -1 if side in ("right", "ruq", "rlq") else 1
        if region == "head":
            return _ellipse(0, self.hh, self.head, self.hh)
        if region == "neck":
            return _ellipse(0, 2 * self.hh + 0.015, 0.024, 0.022)
        if region == "chest_centre":
            return _ellipse(0, self.sy + 0.08, 0.028, 0.065)
        if part == "chest":
            return _ellipse(s * self.shoulder * 0.5, self.sy + 0.075, self.shoulder * 0.36, 0.06)
        if part == "abdomen":
            upper = side in ("ruq", "luq")
            rx = self.waist * 0.42 if upper else self.hip * 0.4
            return _ellipse(s * rx * 1.15, 0.37 if upper else 0.455, rx, 0.035)
        if region == "upper_back":
            return _ellipse(0, self.sy + 0.07, self.shoulder * 0.75, 0.065)
        if region == "lower_back":
            return _ellipse(0, 0.42, self.waist * 0.95, 0.045)
        if part == "arm":
            return _limb(*self.arm(s), 0.028, 0.017, *extent)
        if part == "leg":
            return _limb(*self.leg(s), 0.045, 0.016, *extent)
        if part == "hand":
            return self.hand(s)
        if part == "foot":
            return self.foot(s, view)
        raise InputError(f"no geometry for region '{region}'; regions: {', '.join(REGIONS)}")


@dataclass(frozen=True)
class _Panel:
    """Where one view sits on the page: body-unit coordinates -> pixels."""

    cx: float
    top: float
    height: float
    angle: float
    mirror: int  # +1 front view: the patient's left is drawn on the viewer's right; -1 back view

    def px(self, pts: np.ndarray) -> np.ndarray:
        x, y = pts[:, 0] * self.mirror * self.height, (pts[:, 1] - 0.5) * self.height
        c, s = np.cos(self.angle), np.sin(self.angle)
        return np.stack([self.cx + c * x - s * y, self.top + 0.5 * self.height + s * x + c * y], 1)


def _sample_body(rng: np.random.Generator) -> _Body:
    return _Body(
        head=rng.uniform(0.048, 0.058),
        shoulder=rng.uniform(0.105, 0.13),
        waist=rng.uniform(0.075, 0.095),
        hip=rng.uniform(0.09, 0.11),
        arm_angle=(rng.uniform(0.12, 0.35), rng.uniform(0.12, 0.35)),
        spread=rng.uniform(0.0, 0.02),
    )


def _sample_panel(rng: np.random.Generator, size: int, view: str) -> _Panel:
    height = size * rng.uniform(0.8, 0.92)
    top = rng.uniform(0.02 * size, max(0.02 * size, 0.985 * size - 0.96 * height))
    centre = size * (0.25 if view == "front" else 0.75) + rng.uniform(-2, 2) * size / 256
    return _Panel(centre, top, height, rng.uniform(-0.045, 0.045), 1 if view == "front" else -1)


# -------------------------------------------------------------------------------------------- rendering
def _flat(pts: np.ndarray) -> list[float]:
    return pts.ravel().tolist()


def _polygon_mask(shape: tuple[int, int], pts: np.ndarray) -> np.ndarray:
    img = Image.new("L", shape[::-1], 0)
    ImageDraw.Draw(img).polygon(_flat(pts), fill=255)
    mask = np.asarray(img) > 0
    if not mask.any():  # a sliver thinner than a pixel: keep its centre so every mark leaves ink
        cy, cx = np.clip(pts.mean(0)[::-1].round().astype(int), 0, np.array(shape) - 1)
        mask = mask.copy()
        mask[cy, cx] = True
    return mask


def _draw_body(canvas: np.ndarray, body: _Body, panel: _Panel, view: str, rng: np.random.Generator) -> None:
    """Outline of the silhouette (edge of the union of the parts), face or back details, an optional F/B letter."""
    scale = canvas.shape[0] / 256
    width = max(1, round(rng.uniform(0.8, 2.6) * scale))
    tone = int(rng.integers(0, 70))
    mask = Image.new("L", canvas.shape[::-1], 0)
    draw = ImageDraw.Draw(mask)
    for part in body.parts(view):
        draw.polygon(_flat(panel.px(part + rng.normal(0, 0.0025, part.shape))), fill=255)
    inner = np.asarray(mask.filter(ImageFilter.MinFilter(2 * width + 1))) > 0
    edge = (np.asarray(mask) > 0) & ~inner
    canvas[edge] = np.minimum(canvas[edge], tone)
    layer = Image.new("L", canvas.shape[::-1], 255)
    pen = ImageDraw.Draw(layer)
    hh, w = body.hh, max(1, width - 1)
    if view == "front":  # eyes, mouth and sometimes a navel: the front view is recognisable without a label
        for x in (-0.4, 0.4):
            c = panel.px(np.array([[x * body.head, hh * 0.85]]))[0]
            pen.ellipse([*(c - 0.9 * scale), *(c + 0.9 * scale)], fill=tone)
        mouth = np.array([[-0.35 * body.head, hh * 1.42], [0, hh * 1.55], [0.35 * body.head, hh * 1.42]])
        pen.line(_flat(panel.px(mouth)), fill=tone, width=w)
        if rng.random() < 0.6:
            c = panel.px(np.array([[0.0, 0.41]]))[0]
            pen.ellipse([*(c - scale), *(c + scale)], outline=tone)
    else:  # buttock cleft, sometimes the spine and a hairline
        pen.line(_flat(panel.px(np.array([[0.0, 0.47], [0.0, 0.525]]))), fill=tone, width=w)
        if rng.random() < 0.5:
            pen.line(_flat(panel.px(np.array([[0.0, body.sy + 0.02], [0.0, 0.45]]))), fill=tone, width=w)
        if rng.random() < 0.5:
            hair = _ellipse(0, hh * 1.1, body.head * 0.85, hh * 0.5, n=12)[6:]
            pen.line(_flat(panel.px(hair)), fill=tone, width=w)
    if rng.random() < 0.5:
        _letter(pen, "F" if view == "front" else "B", panel, scale, tone, w)
    np.minimum(canvas, np.asarray(layer), out=canvas)


_LETTERS = {
    "F": ([(0, 1), (0, 0), (0.7, 0)], [(0, 0.5), (0.55, 0.5)]),
    "B": ([(0, 0), (0, 1), (0.55, 1), (0.75, 0.87), (0.75, 0.63), (0.55, 0.5), (0, 0.5)],
          [(0, 0), (0.5, 0), (0.7, 0.12), (0.7, 0.38), (0.5, 0.5)]),
}  # fmt: skip


def _letter(pen: ImageDraw.ImageDraw, letter: str, panel: _Panel, scale: float, tone: int, width: int) -> None:
    """A hand-written 'F' / 'B' in the top outer corner of the panel."""
    x0 = panel.cx - 60 * scale if panel.mirror > 0 else panel.cx + 48 * scale
    for stroke in _LETTERS[letter]:
        pts = np.array(stroke) * 10 * scale + np.array([x0, 4 * scale])
        pen.line(_flat(pts), fill=tone, width=width)


def _mark(canvas: np.ndarray, poly: np.ndarray, style: str, width: int, rng: np.random.Generator) -> None:
    """Ink one region outline ``poly`` (pixels) in ``style``; marks spill a little beyond the region."""
    centre = poly.mean(0)
    poly = centre + (poly - centre) * rng.uniform(0.95, 1.2) + rng.normal(0, 0.8, poly.shape)
    layer = Image.new("L", canvas.shape[::-1], 255)
    pen = ImageDraw.Draw(layer)
    tone = int(rng.integers(0, 80))
    mask = _polygon_mask(canvas.shape, poly)
    if style == "fill":
        pen.polygon(_flat(poly), fill=int(rng.integers(60, 180)))
        if rng.random() < 0.5:
            pen.line(_flat(poly) + _flat(poly[:1]), fill=tone, width=width, joint="curve")
    elif style == "hatch":
        for angle in rng.uniform(0, np.pi, 2 if rng.random() < 0.3 else 1):
            u, n = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
            reach = np.ptp(poly, 0).max() + 2
            for off in np.arange(-reach, reach, rng.uniform(2.5, 5.5) * max(1, width * 0.7)):
                a = centre + n * (off + rng.normal(0, 0.5))
                pen.line(_flat(np.array([a - u * reach, a + u * reach])), fill=tone, width=width)
        ink = np.asarray(layer).copy()
        ink[~mask] = 255
        layer = Image.fromarray(ink)
    elif style == "scribble":
        pen.line(
            _walk(mask, rng, step=rng.uniform(2.0, 4.0) * max(1, width * 0.6)), fill=tone, width=width, joint="curve"
        )
    elif style == "circle":
        lo, hi = poly.min(0), poly.max(0)
        radius = (hi - lo) / 2 * rng.uniform(1.05, 1.2) + 2
        t = np.linspace(0, 2 * np.pi + rng.uniform(0.2, 0.8), 40) + rng.uniform(0, 2 * np.pi)
        wobble = 1 + np.convolve(rng.normal(0, 0.05, 40), np.ones(5) / 5, "same")
        ring = (lo + hi) / 2 + radius * np.stack([np.cos(t), np.sin(t)], 1) * wobble[:, None]
        pen.line(_flat(ring), fill=tone, width=width, joint="curve")
    elif style == "dots":
        ys, xs = np.nonzero(mask)
        r, cross = rng.uniform(1.0, 1.6) * max(1, width * 0.5), rng.random() < 0.4
        for i in rng.choice(len(xs), size=int(np.clip(len(xs) / 30, 5, 40))):
            x, y = float(xs[i]), float(ys[i])
            if cross:
                pen.line([x - r, y - r, x + r, y + r], fill=tone, width=max(1, width - 1))
                pen.line([x - r, y + r, x + r, y - r], fill=tone, width=max(1, width - 1))
            else:
                pen.ellipse([x - r, y - r, x + r, y + r], fill=tone)
    else:
        raise InputError(f"unknown mark style '{style}'.{did_you_mean(style, MARK_STYLES)} Styles: {MARK_STYLES}")
    np.minimum(canvas, np.asarray(layer), out=canvas)


def _walk(mask: np.ndarray, rng: np.random.Generator, *, step: float) -> list[float]:
    """A random-walk scribble that bounces off the edge of ``mask``; returns flat pixel coordinates."""
    ys, xs = np.nonzero(mask)
    i = int(rng.integers(len(xs)))
    p = np.array([xs[i], ys[i]], dtype=float)
    n = int(np.clip(len(xs) / (step * 2), 20, 160))
    turns, bounces, phi = rng.normal(0, 0.7, n), rng.normal(0, 0.6, n), rng.uniform(0, 2 * np.pi)
    out = [p]
    for k in range(n):
        phi += turns[k]
        q = p + step * np.array([np.cos(phi), np.sin(phi)])
        x, y = int(round(q[0])), int(round(q[1]))
        if 0 <= y < mask.shape[0] and 0 <= x < mask.shape[1] and mask[y, x]:
            p = q
            out.append(q)
        else:
            phi += np.pi + bounces[k]
    if len(out) == 1:  # nowhere to go (a one-pixel region): a dot
        out.append(p + 0.5)
    return _flat(np.array(out))


def _check_regions(regions: dict[str, dict]) -> None:
    for region, spec in regions.items():
        if region not in REGIONS:
            raise InputError(f"unknown region '{region}'.{did_you_mean(region, REGIONS)} Regions: {', '.join(REGIONS)}")
        if unknown := sorted(set(spec) - set(_SPEC_KEYS)):
            raise InputError(f"region '{region}': unknown mark keys {unknown}; allowed: {', '.join(_SPEC_KEYS)}")
        if "style" in spec and spec["style"] not in MARK_STYLES:
            raise InputError(f"region '{region}': style '{spec['style']}' is not one of {MARK_STYLES}")
        views = tuple(spec.get("views", REGION_VIEWS[region]))
        if not views or not set(views) <= set(REGION_VIEWS[region]):
            raise InputError(f"region '{region}' can be drawn on {REGION_VIEWS[region]}, not {views}")


def render_sketch(regions: dict[str, dict], rng: np.random.Generator, *, size: int = 256) -> np.ndarray:
    """Draw a front + back body map with the given regions shaded.

    The body (proportions, placement, rotation, line width, paper noise) is drawn from ``rng`` before any mark, so
    the same generator state with and without marks gives the same outline.

    Args:
        regions: region name (``REGIONS``) -> mark spec, ``{}`` or any of ``style`` (``MARK_STYLES``), ``views``
            (subset of the views the region can be drawn on: chest/abdomen front only, backs back only) and
            ``width`` (stroke width in pixels at size 256); missing keys are drawn from ``rng``.
        rng: the only source of randomness.
        size: side of the square image in pixels (>= 64).

    Returns:
        uint8 [size, size]: white paper (255), dark ink. Left half = FRONT view (patient's left on the viewer's
        right), right half = BACK view (patient's left on the viewer's left).
    """
    if size < 64:
        raise InputError(f"size must be >= 64 pixels, got {size}")
    _check_regions(regions)
    body = _sample_body(rng)
    panels = {view: _sample_panel(rng, size, view) for view in VIEWS}
    noise = np.abs(rng.normal(0, rng.uniform(2, 8), (size, size))) if rng.random() < 0.5 else None
    canvas = np.full((size, size), 255, dtype=np.uint8)
    for view in VIEWS:
        _draw_body(canvas, body, panels[view], view, rng)
    for region in (r for r in REGIONS if r in regions):  # REGIONS order: the dict's order does not matter
        spec = regions[region]
        style = spec.get("style") or str(rng.choice(MARK_STYLES))
        width = max(1, round(spec.get("width") or rng.uniform(1, 3.5)) * size // 256)
        t0 = rng.uniform(0, 0.45)
        extent = (t0, min(1.0, t0 + rng.uniform(0.4, 1.0)))
        for view in spec.get("views", REGION_VIEWS[region]):
            _mark(canvas, panels[view].px(body.region(region, view, extent)), style, width, rng)
    if noise is not None:  # paper texture darkens only, so blank paper stays near white
        canvas = np.clip(canvas - noise, 0, 255).astype(np.uint8)
    return canvas
