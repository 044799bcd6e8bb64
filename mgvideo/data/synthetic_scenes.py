"""Scenes of the synthetic dataset: the classes, how a clip of one class is laid out, and how its frames are
drawn.

Every clip holds the same cast (a disk and a square of random colour and texture, plus a tiny dot) over
static clutter, so one frame says nothing about the class: the class lies only in how the cast moves
(direction, speed, rotation sense, order of events, collisions), often combined with which member moves
(its shape, or the tiny dot). An earlier cast of six shapes kept small 3D CNNs at chance for minutes of CPU.
A scene is a pure function of its random draws, so any frame can be drawn on its own (see `render_frames`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SHAPES = ("disk", "square")
TEXTURES = ("solid", "stripes", "checker")  # drawn at random for each object
DOT = "dot"  # the tiny object, always present


@dataclass(frozen=True)
class ClassSpec:
    """One class: its name, an SSv2-style template, the action that makes it, and the action's variant."""

    name: str
    template: str
    action: str
    variant: tuple = ()


def _classes() -> tuple[ClassSpec, ...]:
    out = []
    for dname, angle in (("right", 0.0), ("left", np.pi), ("up", -np.pi / 2), ("down", np.pi / 2)):
        for speed in ("slowly", "quickly"):
            out.append(ClassSpec(f"move_{dname}_{speed}", f"Moving [something] {dname} {speed}",
                                 "linear", (angle, speed)))
    out += [
        ClassSpec("rotate_clockwise", "Turning [something] clockwise", "rotate", (1.0,)),
        ClassSpec("rotate_anticlockwise", "Turning [something] anticlockwise", "rotate", (-1.0,)),
        ClassSpec("orbit_disk", "Circling [something] round", "orbit", ("disk",)),
        ClassSpec("orbit_square", "Circling [something] square", "orbit", ("square",)),
        ClassSpec("orbit_dot", "Circling [something] tiny", "orbit", (DOT,)),
        ClassSpec("hop_disk_then_square", "Hopping [something] before [something]", "hops",
                  ("disk", "square")),
        ClassSpec("hop_square_then_disk", "Hopping [something] after [something]", "hops",
                  ("square", "disk")),
        ClassSpec("collide_bounce", "Pushing [something] and [something] so they bounce", "collide", (True,)),
        ClassSpec("collide_pass", "Moving [something] and [something] past each other", "collide", (False,)),
        ClassSpec("dot_moves_right", "Moving [something] tiny to the right", "dot", (0.0,)),
        ClassSpec("dot_moves_left", "Moving [something] tiny to the left", "dot", (np.pi,)),
        ClassSpec("shake", "Shaking [something]", "shake", ()),
    ]
    return tuple(out)


CLASSES = _classes()
CLASS_NAMES = tuple(c.name for c in CLASSES)

# Difficulty knobs, in units of the frame's short side (S) and frames. Calibrated (version 3; version 4 slowed
# SPIN) so that the small reference model lands between 60% and 90% val top-1: c3d_tiny reaches 88% in
# `mgvideo bench tta`.
SPEED = {"slowly": (0.012, 0.016), "quickly": (0.028, 0.036)}  # S per frame
# Rad per frame. The square looks the same every quarter turn, so at r·SPIN above pi/4 per sampled frame
# its turn looks reversed. Kept below that up to r = 8, the long cycle's coarsest sampling rate.
SPIN = (0.06, 0.09)
RADIUS = (0.12, 0.16)  # object radius
DOT_RADIUS = 0.022
JITTER = 0.0015  # stationary std of every object's wander (its per-frame steps stay well below SPEED)
SPIN_JITTER = 0.004  # rad per frame random walk of every object's angle
NOISE = (1.0, 3.0)  # per-pixel luma noise std, grey levels
NOISE_SHIFT = 24  # each frame's noise is a randomly shifted window of one noise field (cheap, and any frame
# can be drawn alone)
CLUTTER = (1, 4)  # static background blobs per clip


@dataclass
class Track:
    """One object over the clip: look, plus per-frame centre (pixels) and angle (radians, clockwise)."""

    shape: str
    texture: str
    color: np.ndarray
    radius: float
    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray
    wrap: bool = False  # positions fold around the frame (steady motion that would leave it)


@dataclass
class Scene:
    """Everything needed to draw any frame of one clip."""

    width: int
    height: int
    num_frames: int
    background: np.ndarray  # (H, W, 3) float32
    noise_field: np.ndarray  # (H + NOISE_SHIFT, W + NOISE_SHIFT, 1) float32, scaled
    noise_shift: np.ndarray  # (num_frames, 2): where each frame's noise window starts in the field
    tracks: list[Track] = field(default_factory=list)
    claimed: set = field(default_factory=set)  # indices of tracks an action already drives

    @property
    def short(self) -> float:
        return float(min(self.width, self.height))


def _vivid_color(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour of random hue and brightness (HSV to RGB)."""
    h, s, v = rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    rgb = v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)
    return (rgb * 255).astype(np.float32)


def _wander(rng: np.random.Generator, n: int, std: float, rho: float = 0.95) -> np.ndarray:
    """A mean-reverting random walk (stationary std `std`), the idle motion of every object."""
    eps = rng.standard_normal(n) * std * np.sqrt(1 - rho * rho)
    out = np.empty(n)
    out[0] = rng.standard_normal() * std
    for t in range(1, n):
        out[t] = rho * out[t - 1] + eps[t]
    return out


def new_scene(rng: np.random.Generator, width: int, height: int, num_frames: int) -> Scene:
    """A scene with background clutter and the idle cast (every object wandering in place)."""
    s = float(min(width, height))
    base = rng.uniform(100, 150) + rng.uniform(-10, 10, size=3)
    bg = np.empty((height, width, 3), np.float32)
    bg[:] = base
    field_shape = (height + NOISE_SHIFT, width + NOISE_SHIFT, 1)
    noise = rng.standard_normal(field_shape, np.float32) * np.float32(rng.uniform(*NOISE))
    scene = Scene(width, height, num_frames, bg, noise, rng.integers(0, NOISE_SHIFT, (num_frames, 2)))
    _draw_clutter(rng, scene, base)
    cast = [(shape, str(rng.choice(TEXTURES)), rng.uniform(*RADIUS) * s) for shape in SHAPES]
    cast.append((DOT, "solid", DOT_RADIUS * s))
    for shape, tex, radius in cast:
        margin = radius + 0.08 * s
        hx, hy = rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)
        color = _vivid_color(rng) if shape != DOT else np.full(3, 255.0 if base.mean() < 125 else 0.0)
        scene.tracks.append(Track(
            shape, tex, color.astype(np.float32), radius,
            hx + _wander(rng, num_frames, JITTER * s), hy + _wander(rng, num_frames, JITTER * s),
            rng.uniform(0, 2 * np.pi) + np.cumsum(rng.standard_normal(num_frames) * SPIN_JITTER)))
    return scene


def _draw_clutter(rng: np.random.Generator, scene: Scene, base: np.ndarray) -> None:
    """Static low-contrast shapes in the background, some of them copies of the cast's shapes."""
    s, clutter = scene.short, []
    for _ in range(int(rng.integers(*CLUTTER, endpoint=True))):
        shape = str(rng.choice(SHAPES + ("blob", "blob")))
        radius = rng.uniform(0.04, 0.2) * s if shape == "blob" else rng.uniform(*RADIUS) * s
        color = np.clip(base + rng.uniform(-35, 35, size=3), 0, 255).astype(np.float32)
        one = np.ones(1)
        track = Track("disk" if shape == "blob" else shape, str(rng.choice(TEXTURES)), color, radius,
                      one * rng.uniform(0, scene.width), one * rng.uniform(0, scene.height),
                      one * rng.uniform(0, 2 * np.pi))
        clutter.append(track)
    h, w, pad = scene.height, scene.width, _pad_for(clutter)
    canvas = np.pad(scene.background, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    _blend(canvas, _placed_sprites(clutter, np.zeros(1, np.int64), h, w, pad), 0)
    scene.background = np.ascontiguousarray(canvas[pad:pad + h, pad:pad + w])


# --------------------------------------------------------------------------------------------- drawing
def _sdf(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (pixels, negative inside) of a shape of radius r in its own frame."""
    au, av = np.abs(u), np.abs(v)
    if shape in ("disk", DOT):
        return np.hypot(u, v) - r
    if shape == "ring":
        return np.abs(np.hypot(u, v) - 0.7 * r) - 0.3 * r
    if shape == "square":
        return np.maximum(au, av) - 0.8 * r
    if shape == "triangle":  # points along +u so that its heading shows the angle
        return np.maximum(-u - 0.5 * r, u * 0.5 + av * 0.866 - 0.5 * r)
    if shape == "cross":
        return np.minimum(np.maximum(au - r, av - 0.33 * r), np.maximum(au - 0.33 * r, av - r))
    if shape == "bar":
        return np.maximum(au - r, av - 0.3 * r)
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Shade factor in [0.35, 1]: stripes and checks have a period of about half the radius."""
    if texture == "solid":
        return np.ones_like(u)
    period = 0.55 * r
    a = np.sin(u * (2 * np.pi / period)) > 0
    if texture == "stripes":
        return np.where(a, 1.0, 0.35)
    b = np.sin(v * (2 * np.pi / period)) > 0
    return np.where(a ^ b, 1.0, 0.35)


def _sprites(track: Track, ts: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The object at frames `ts` as size x size patches, anti-aliased at sub-pixel positions: each patch's
    top-left pixel (N, 2: x, y), alpha (N, size, size, 1) and colour (N, size, size, 3)."""
    x, y, a = track.x[ts], track.y[ts], track.angle[ts]
    corner = np.stack([np.floor(x), np.floor(y)], 1).astype(np.int64) - size // 2
    grid = np.arange(size) + 0.5
    dx = (corner[:, 0, None] + grid - x[:, None])[:, None, :]
    dy = (corner[:, 1, None] + grid - y[:, None])[:, :, None]
    c, s = np.cos(a)[:, None, None], np.sin(a)[:, None, None]
    u, v = c * dx + s * dy, -s * dx + c * dy
    alpha = np.clip(0.5 - _sdf(track.shape, u, v, track.radius), 0.0, 1.0)[..., None].astype(np.float32)
    shade = _texture(track.texture, u, v, track.radius)[..., None].astype(np.float32)
    return corner, alpha, track.color * shade


def _placed_sprites(tracks: list[Track], ts: np.ndarray, height: int, width: int, pad: int) -> list:
    """For each track, its patches at frames `ts` placed on a canvas padded by `pad` on every side: the
    padding takes the parts of objects outside the frame (positions further out are clamped, out of view)."""
    placed = []
    for track in tracks:
        size = 2 * int(np.ceil(track.radius * 1.2)) + 3
        if track.wrap:  # steady motion leaving the frame comes back on the other side
            m = 2 * track.radius
            x, y = (track.x + m) % (width + 2 * m) - m, (track.y + m) % (height + 2 * m) - m
            track = Track(track.shape, track.texture, track.color, track.radius, x, y, track.angle)
        corner, alpha, color = _sprites(track, ts, size)
        x0 = np.clip(corner[:, 0] + pad, 0, width + 2 * pad - size)
        y0 = np.clip(corner[:, 1] + pad, 0, height + 2 * pad - size)
        placed.append((size, x0, y0, alpha, color))
    return placed


def _blend(canvas: np.ndarray, placed: list, k: int) -> None:
    """Alpha-blend the k-th patch of every placed sprite into canvas (H + 2 pad, W + 2 pad, 3)."""
    for size, x0, y0, alpha, color in placed:
        patch = canvas[y0[k]:y0[k] + size, x0[k]:x0[k] + size]
        patch += alpha[k] * (color[k] - patch)


def _pad_for(tracks: list[Track]) -> int:
    return int(np.ceil(max(t.radius for t in tracks) * 1.2)) + 3


def render_frames(scene: Scene, indices: list[int] | np.ndarray | range) -> np.ndarray:
    """Frames `indices` of the scene as uint8 (N, H, W, 3); drawing a subset gives the same pixels as drawing
    them all."""
    ts = np.asarray(indices, dtype=np.int64).reshape(-1)
    h, w, pad = scene.height, scene.width, _pad_for(scene.tracks)
    background = np.pad(scene.background, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    placed = _placed_sprites(scene.tracks, ts, h, w, pad)
    out = np.empty((len(ts), h, w, 3), np.uint8)
    for k, t in enumerate(ts):
        canvas = background.copy()
        _blend(canvas, placed, k)
        frame = canvas[pad:pad + h, pad:pad + w]
        oy, ox = scene.noise_shift[t]
        frame += scene.noise_field[oy:oy + h, ox:ox + w]
        np.clip(frame, 0, 255, out=frame)
        out[k] = frame
    return out


# --------------------------------------------------------------------------------------------- actions
class CastConflict(Exception):
    """An action needs an object that another action of the same clip already drives."""


def _pick(rng: np.random.Generator, scene: Scene, ok) -> int:
    free = [i for i, tr in enumerate(scene.tracks) if i not in scene.claimed and ok(tr)]
    if not free:
        raise CastConflict
    i = int(rng.choice(free))
    scene.claimed.add(i)
    return i


def _smoothstep(z: np.ndarray) -> np.ndarray:
    z = np.clip(z, 0.0, 1.0)
    return z * z * (3 - 2 * z)


def add_action(rng: np.random.Generator, scene: Scene, spec: ClassSpec, t0: int, t1: int) -> list[str]:
    """Make the scene show `spec` between frames t0 and t1 (the object holds its pose outside); returns the
    names of the objects involved, in template order."""
    tau = np.clip(np.arange(scene.num_frames) - t0, 0, t1 - t0).astype(np.float64)
    n, s, tr = float(t1 - t0), scene.short, scene.tracks
    if spec.action in ("linear", "dot"):
        dot = spec.action == "dot"
        i = _pick(rng, scene, lambda t: (t.shape == DOT) == dot)
        speed = rng.uniform(*SPEED[spec.variant[1]]) if spec.action == "linear" else rng.uniform(0.016, 0.022)
        ang = spec.variant[0] + rng.uniform(-0.17, 0.17)
        off = (tau - n / 2) * speed * s
        tr[i].x, tr[i].y, tr[i].wrap = tr[i].x + off * np.cos(ang), tr[i].y + off * np.sin(ang), True
        return [tr[i].shape]
    if spec.action == "rotate":
        i = _pick(rng, scene, lambda t: t.shape == "square")
        tr[i].angle = tr[i].angle + spec.variant[0] * rng.uniform(*SPIN) * tau
        return [tr[i].shape]
    if spec.action == "orbit":
        i = _pick(rng, scene, lambda t: t.shape == spec.variant[0])
        phase = rng.uniform(0, 2 * np.pi) + rng.choice([-1, 1]) * tau * 2 * np.pi / rng.uniform(28, 44)
        radius = rng.uniform(0.1, 0.16) * s
        tr[i].x, tr[i].y = tr[i].x + radius * np.cos(phase), tr[i].y + radius * np.sin(phase)
        return [tr[i].shape]
    if spec.action == "hops":
        first = _pick(rng, scene, lambda t: t.shape == spec.variant[0])
        second = _pick(rng, scene, lambda t: t.shape == spec.variant[1])
        gap = rng.uniform(8, 14)
        start = n / 2 - gap / 2 + rng.uniform(-0.1, 0.1) * n
        for i, when in ((first, start), (second, start + gap)):
            to_centre = np.arctan2(scene.height / 2 - tr[i].y[0], scene.width / 2 - tr[i].x[0])
            ang, dist = to_centre + rng.uniform(-1.2, 1.2), rng.uniform(0.12, 0.2) * s
            step = _smoothstep((tau - when) / 4.0) * dist
            tr[i].x, tr[i].y = tr[i].x + step * np.cos(ang), tr[i].y + step * np.sin(ang)
        return [tr[first].shape, tr[second].shape]
    if spec.action == "collide":
        return _collide(rng, scene, tau, n, bounce=spec.variant[0])
    if spec.action == "shake":
        i = _pick(rng, scene, lambda t: t.shape != DOT)
        amp, period, ang = rng.uniform(0.05, 0.08) * s, rng.uniform(8, 14), rng.uniform(0, np.pi)
        off = amp * np.sin(2 * np.pi * tau / period + rng.uniform(0, 2 * np.pi))
        tr[i].x, tr[i].y = tr[i].x + off * np.cos(ang), tr[i].y + off * np.sin(ang)
        return [tr[i].shape]
    raise ValueError(f"unknown action {spec.action!r}")


def _collide(rng: np.random.Generator, scene: Scene, tau: np.ndarray, n: float, bounce: bool) -> list[str]:
    """Two objects head for each other along a random line, then bounce back or pass through."""
    s, tr = scene.short, scene.tracks
    a = _pick(rng, scene, lambda t: t.shape != DOT)
    b = _pick(rng, scene, lambda t: t.shape != DOT)
    px, py = rng.uniform(0.3, 0.7) * scene.width, rng.uniform(0.3, 0.7) * scene.height
    ang, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.012, 0.016) * s
    meet = n / 2 + rng.uniform(-0.1, 0.1) * n
    touch = 0.9 * (tr[a].radius + tr[b].radius) / 2
    side = rng.uniform(0.0, 0.4) * (tr[a].radius + tr[b].radius) / 2
    along = touch + speed * np.abs(tau - meet) if bounce else speed * (meet - tau)
    for i, sign in ((a, -1.0), (b, 1.0)):
        wob_x, wob_y = tr[i].x - tr[i].x.mean(), tr[i].y - tr[i].y.mean()
        tr[i].x = px + sign * (along * np.cos(ang) - side * np.sin(ang)) + 0.3 * wob_x
        tr[i].y = py + sign * (along * np.sin(ang) + side * np.cos(ang)) + 0.3 * wob_y
    return [tr[a].shape, tr[b].shape]


# ------------------------------------------------------------------------------------------- sampling
FPS_CHOICES = (12, 15, 20, 24, 25, 30)
ASPECTS = ((1.0, 0.2), (4 / 3, 0.4), (16 / 9, 0.3), (3 / 4, 0.1))  # (width / height, probability)


def sample_geometry(rng: np.random.Generator, frames: tuple[int, int] = (48, 72)
                    ) -> tuple[int, int, int, int]:
    """(width, height, fps, num_frames) of one clip: short side 80-112 px, mixed aspect ratios (even sizes,
    as yuv420p needs)."""
    short = 2 * int(rng.integers(40, 56, endpoint=True))
    aspect = ASPECTS[int(rng.choice(len(ASPECTS), p=[p for _, p in ASPECTS]))][0]
    long = 2 * round(short * max(aspect, 1 / aspect) / 2)
    width, height = (long, short) if aspect >= 1 else (short, long)
    fps = int(rng.choice(FPS_CHOICES))
    return width, height, fps, int(rng.integers(frames[0], frames[1], endpoint=True))


def make_clip(seed: int, label: int, frames: tuple[int, int] = (48, 72)) -> tuple[Scene, int, list[str]]:
    """The scene of one single-label clip, its fps and the objects involved: a pure function of its
    arguments."""
    rng = np.random.default_rng(seed)
    width, height, fps, length = sample_geometry(rng, frames)
    scene = new_scene(rng, width, height, length)
    names = add_action(rng, scene, CLASSES[label], 0, length)
    return scene, fps, names
