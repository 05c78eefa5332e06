"""Scene sampling and frame rendering for the synthetic skill benchmark.

Rendering is a pure function of (static scene, phase per frame): a frame depends only on the
phase ``phi mod 1`` at that instant and on per-video static parameters. Nothing drawn depends on
velocity (no motion blur, no trails), so a single frame carries no information about timing.
"""
from __future__ import annotations

import colorsys
from typing import Any

import numpy as np

SCENARIOS = ["basketball_dribble", "gymnastics_swing"]

Color = list[float]


# --------------------------------------------------------------------------- colours
def _hsv(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float]) -> Color:
    """Random RGB colour (0-255) with hue uniform and saturation/value in the given ranges."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*s), rng.uniform(*v))
    return [round(255 * r, 2), round(255 * g, 2), round(255 * b, 2)]


def _luma(c: Color) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _distinct(rng: np.random.Generator, avoid: list[Color], min_dist: float = 110.0,
              min_luma: float = 35.0) -> Color:
    """A random colour far (RGB distance and luma) from every colour in ``avoid``."""
    for _ in range(500):
        c = _hsv(rng, (0.3, 1.0), (0.25, 1.0))
        if all(np.linalg.norm(np.subtract(c, a)) >= min_dist and abs(_luma(c) - _luma(a)) >= min_luma
               for a in avoid):
            return c
    return [255.0 - a for a in avoid[0]]  # fallback: the complement of the first colour


def _shade(c: Color, f: float) -> Color:
    return [round(min(255.0, x * f), 2) for x in c]


# --------------------------------------------------------------------------- scenes
def sample_scene(scenario: str, rng: np.random.Generator) -> dict[str, Any]:
    """Static, level-independent scene parameters in 64-pixel units (scaled at render time)."""
    bg = _hsv(rng, (0.05, 0.6), (0.15, 0.95))
    bg2 = [float(np.clip(x + rng.uniform(-40, 40), 0, 255)) for x in bg]
    texture = {
        "freqs": rng.uniform(0.5, 3.0, size=(3, 2)).round(4).tolist(),
        "phases": rng.uniform(0, 2 * np.pi, size=3).round(4).tolist(),
        "amp": round(float(rng.uniform(3.0, 12.0)), 3),
        "noise_seed": int(rng.integers(0, 2**31 - 1)),
        "noise_amp": round(float(rng.uniform(0.0, 6.0)), 3),
    }
    scene: dict[str, Any] = {"bg": bg, "bg2": bg2, "texture": texture,
                             "phase0": round(float(rng.uniform(0, 1)), 6)}
    if scenario == "basketball_dribble":
        r = rng.uniform(4.5, 6.5)
        floor_y = rng.uniform(52.0, 58.0)
        height = rng.uniform(20.0, 26.0)
        ax = height * rng.uniform(0.5, 0.6)  # a round loop keeps the per-beat travel nearly constant
        cx = rng.uniform(r + ax + 3.0, 61.0 - r - ax)
        floor = _distinct(rng, [bg], 60.0, 15.0)
        ball = _distinct(rng, [bg, floor])
        skin = _distinct(rng, [bg], 90.0, 25.0)
        shirt = _distinct(rng, [bg, skin], 80.0, 20.0)
        scene.update(
            r=r, floor_y=floor_y, height=height, ax=ax, cx=cx, side=float(rng.choice([-1.0, 1.0])),
            shoulder_dx=rng.uniform(4.0, 9.0) * float(rng.choice([-1.0, 1.0])),
            hand_reach=rng.uniform(4.0, 8.0), floor=floor, ball=ball, seam=_shade(ball, 0.45),
            skin=skin, hand=_shade(skin, 0.75), shirt=shirt, spins=float(rng.choice([1.0, 2.0])),
        )
    elif scenario == "gymnastics_swing":
        length = rng.uniform(18.0, 24.0)
        m = length + 3.0
        px = rng.uniform(m, 64.0 - m)
        py = rng.uniform(m, min(64.0 - m, 36.0))
        mat = _distinct(rng, [bg], 60.0, 15.0)
        body = _distinct(rng, [bg, mat])
        bar = _distinct(rng, [bg], 80.0, 20.0)
        scene.update(
            length=length, px=px, py=py, direction=float(rng.choice([-1.0, 1.0])),
            angle0=rng.uniform(0, 2 * np.pi), width=rng.uniform(2.2, 3.2), mat_y=rng.uniform(56.0, 61.0),
            mat=mat, body=body, bar=bar,
        )
    else:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {SCENARIOS}")
    return {k: (round(float(v), 5) if isinstance(v, (float, np.floating)) else v) for k, v in scene.items()}


# --------------------------------------------------------------------------- primitives
Coord = "float | np.ndarray"


def _col(v: "float | np.ndarray") -> np.ndarray:
    """Per-frame parameter (scalar or [T]) as a [T|1, 1, 1] array for broadcasting."""
    return np.asarray(v, np.float32).reshape(-1, 1, 1)


class Canvas:
    """Float RGB images [T, H, W, 3] with anti-aliased disc / capsule drawing (coverage from distance).

    Geometry is given in 64-pixel units; each coordinate may be a scalar or a per-frame array [T].
    Each primitive is evaluated only inside the bounding box it covers over all frames.
    """

    def __init__(self, base: np.ndarray, frames: int = 1) -> None:
        n = base.shape[0]
        self.n, self.s = n, n / 64.0
        self.img = np.repeat(base[None].astype(np.float32), frames, axis=0)
        yy, xx = (np.mgrid[0:n, 0:n].astype(np.float32) + 0.5) / self.s
        self.yy, self.xx = yy[None], xx[None]

    def _box(self, xs: list[np.ndarray], ys: list[np.ndarray], pad: float) -> tuple[slice, slice]:
        def span(vals: list[np.ndarray]) -> slice:
            lo = (min(float(v.min()) for v in vals) - pad - 1.0) * self.s
            hi = (max(float(v.max()) for v in vals) + pad + 1.0) * self.s
            return slice(int(np.clip(np.floor(lo), 0, self.n)), int(np.clip(np.ceil(hi), 0, self.n)))
        return span(ys), span(xs)

    def _blend(self, box: tuple[slice, slice], dist: np.ndarray, radius: float, color: Color) -> None:
        alpha = np.clip((radius - dist) * self.s + 0.5, 0.0, 1.0)[..., None]
        view = self.img[:, box[0], box[1]]
        view += alpha * (np.asarray(color, np.float32) - view)

    def disc(self, cx: Coord, cy: Coord, r: float, color: Color) -> None:
        cx, cy = _col(cx), _col(cy)
        box = self._box([cx], [cy], r)
        dx, dy = self.xx[:, box[0], box[1]] - cx, self.yy[:, box[0], box[1]] - cy
        self._blend(box, np.sqrt(dx * dx + dy * dy), r, color)

    def capsule(self, p0: tuple[Coord, Coord], p1: tuple[Coord, Coord], hw: float, color: Color) -> None:
        x0, y0, x1, y1 = (_col(v) for v in (*p0, *p1))
        box = self._box([x0, x1], [y0, y1], hw)
        xx, yy = self.xx[:, box[0], box[1]] - x0, self.yy[:, box[0], box[1]] - y0
        dx, dy = x1 - x0, y1 - y0
        t = np.clip((xx * dx + yy * dy) / np.maximum(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
        ex, ey = xx - t * dx, yy - t * dy
        self._blend(box, np.sqrt(ex * ex + ey * ey), hw, color)


def background(scene: dict[str, Any], scenario: str, size: int) -> np.ndarray:
    """Static background: vertical gradient, low-frequency texture, fixed noise, floor/bar props."""
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    bg, bg2 = np.asarray(scene["bg"], np.float32), np.asarray(scene["bg2"], np.float32)
    img = bg + yy[..., None] * (bg2 - bg)
    tex = scene["texture"]
    wave = sum(np.sin(2 * np.pi * (f[0] * xx + f[1] * yy) + p) for f, p in zip(tex["freqs"], tex["phases"]))
    noise = np.random.default_rng(tex["noise_seed"]).standard_normal((size, size)).astype(np.float32)
    img = img + (tex["amp"] / 3.0 * wave + tex["noise_amp"] * noise)[..., None]
    canvas = Canvas(np.clip(img, 0, 255))
    if scenario == "basketball_dribble":
        floor = canvas.yy[0] >= scene["floor_y"]
        canvas.img[0, floor] = 0.25 * canvas.img[0, floor] + 0.75 * np.asarray(scene["floor"], np.float32)
    else:
        mat = canvas.yy[0] >= scene["mat_y"]
        canvas.img[0, mat] = 0.25 * canvas.img[0, mat] + 0.75 * np.asarray(scene["mat"], np.float32)
        half = 0.35 * scene["length"]
        left, right = (scene["px"] - half, scene["py"]), (scene["px"] + half, scene["py"])
        canvas.capsule(left, right, 0.8, scene["bar"])
        for x in (left[0], right[0]):
            canvas.capsule((x, scene["py"]), (x, 70.0), 0.9, scene["bar"])
    return canvas.img[0]


# --------------------------------------------------------------------------- scenarios
def _dribble_table(scene: dict[str, Any], n: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Arc-length table of the dribble loop so the ball moves at constant path speed per phase."""
    u = np.linspace(0.0, 1.0, n + 1)
    x = scene["cx"] + scene["side"] * scene["ax"] * np.sin(2 * np.pi * u)
    y = scene["floor_y"] - scene["r"] - scene["height"] * np.abs(np.sin(np.pi * u))
    seg = np.hypot(np.diff(x), np.diff(y))
    s = np.concatenate([[0.0], np.cumsum(seg)]) / seg.sum()
    return s, u


def _draw_dribble(c: Canvas, scene: dict[str, Any], phi: np.ndarray) -> None:
    u = np.interp(phi % 1.0, *_dribble_table(scene))
    r = scene["r"]
    bx = scene["cx"] + scene["side"] * scene["ax"] * np.sin(2 * np.pi * u)
    by = scene["floor_y"] - r - scene["height"] * np.abs(np.sin(np.pi * u))
    top = scene["floor_y"] - r - scene["height"]
    hand_r = 0.65 * r
    hy = np.minimum(by - r - hand_r + 0.5, top - r - hand_r + 0.5 + scene["hand_reach"])
    shoulder = (scene["cx"] + scene["shoulder_dx"], max(top - r - 13.0, -2.0))
    side = np.sign(scene["shoulder_dx"])
    torso = ((shoulder[0] + side * 5.0, shoulder[1] + 2.0), (shoulder[0] + side * 8.0, -12.0))
    c.capsule(*torso, 5.0, scene["shirt"])  # static body above the arm
    c.capsule(shoulder, (bx, hy), 0.35 * r, scene["skin"])
    c.disc(bx, by, r, scene["ball"])
    ang = 2 * np.pi * scene["spins"] * u
    dx, dy = 0.8 * r * np.cos(ang), 0.8 * r * np.sin(ang)
    c.capsule((bx - dx, by - dy), (bx + dx, by + dy), 0.35, scene["seam"])
    c.disc(bx, hy, hand_r, scene["hand"])


def _draw_swing(c: Canvas, scene: dict[str, Any], phi: np.ndarray) -> None:
    th = scene["angle0"] + scene["direction"] * 2 * np.pi * (phi % 1.0)
    ux, uy = np.sin(th), np.cos(th)  # along the body, away from the bar
    nx, ny = uy, -ux  # chest side
    p, L, w = (scene["px"], scene["py"]), scene["length"], scene["width"]

    def at(f: float, side: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        return p[0] + f * L * ux + side * nx, p[1] + f * L * uy + side * ny

    col = scene["body"]
    c.capsule(p, at(0.25), 0.45 * w, col)  # arms
    c.capsule(at(0.25), at(0.62), 0.75 * w, col)  # torso
    c.capsule(at(0.62), at(1.0), 0.55 * w, col)  # legs
    c.disc(*at(0.2, 0.9 * w), 1.05 * w, col)  # head


def render_frames(scenario: str, scene: dict[str, Any], phases: np.ndarray, size: int) -> np.ndarray:
    """Render uint8 frames [T, size, size, 3]; frame t depends only on ``phases[t] mod 1``."""
    phases = np.asarray(phases, np.float64)
    c = Canvas(background(scene, scenario, size), len(phases))
    (_draw_dribble if scenario == "basketball_dribble" else _draw_swing)(c, scene, phases)
    return np.clip(np.rint(c.img), 0, 255).astype(np.uint8)
