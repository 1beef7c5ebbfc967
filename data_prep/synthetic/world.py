"""The synthetic dynamics world: small rendered videos whose moments need *change* to be found.

A video shows 2-3 objects (shape x colour x size, colours distinct) over a named scene. Objects
drift slowly; a few timed events make one of two acting objects move left / right / up / down,
grow, shrink, jump, appear or disappear, each sampled only where the object has room to do it
visibly. Events of a video never overlap in time, a third object only drifts (a distractor), each
(object, action) happens at most once per video, and the sampler makes most queries need the
object words, the change words or both: the two actors take turns, and an event often repeats
the other actor's action.

Image-text pre-training (``pretrain.py``) sees single frames with static captions only (objects,
colours, sizes, scene; no action words): the tiny CLIP knows *what* the objects are, not *how
they change*. That is the gap VDI is about.

Everything is deterministic given the seed: ``sample_video(seed, index)`` always returns the same
specification and ``render_frames(spec)`` the same pixels.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.12),
    "green": (0.15, 0.85, 0.2),
    "blue": (0.15, 0.3, 1.0),
    "yellow": (1.0, 0.92, 0.1),
    "purple": (0.62, 0.18, 0.9),
    "orange": (1.0, 0.55, 0.05),
    # "teal", not "cyan": spaCy's small model reads "cyan" as a noun and breaks the noun chunk
    "teal": (0.1, 0.92, 0.95),
    "pink": (1.0, 0.45, 0.75),
}
SHAPES = ["circle", "square", "triangle", "star", "cross", "ring"]
# Nouns a caption or query may use for a shape (all appear in the pre-training captions).
SHAPE_NOUNS = {
    "circle": ["circle", "disc"],
    "square": ["square", "box"],
    "triangle": ["triangle"],
    "star": ["star"],
    "cross": ["cross"],  # "plus sign" split into "plus" (Q^d) + "sign" (Q^s) under the paper's rule
    "ring": ["ring", "hoop"],
}
SIZES = {"small": 8.0, "big": 12.0}  # radius in pixels at 64 x 64
SCENES = ["forest", "beach", "night", "desert", "snow", "city"]
# No "spin" and no "still" (world v5): a full turn ends where it started and global frame features
# do not encode the angle; "still" only stops a 1 px/s drift. Measured with
# `python sweeps/world_diagnosis.py visibility` on v4: 0% of either changed the object visibly,
# 18% of the training moments.
ACTIONS = ["left", "right", "up", "down", "grow", "shrink", "jump", "appear", "disappear"]
# Several phrasings per action (synonyms, word order); checked to parse into Q^s / Q^d by spaCy.
# Phrasings chosen so that the paper's rule (noun chunks -> Q^s, the rest -> Q^d) splits every query
# as intended with spaCy's en_core_web_sm: no action word that also reads as a noun ("shrinks",
# "slides", "rightwards", "view"), no noun in an action phrase ("to the right"); measured over
# every template, noun and colour (README, "The Q^s / Q^d split, audited").
ACTION_PHRASES = {
    "left": ["is moving left", "is going left", "is heading left"],
    "right": ["is moving right", "goes right", "is going right", "is heading right"],
    "up": ["goes up", "is rising", "rises up", "is going up"],
    "down": ["goes down", "falls down", "is falling", "is going down"],
    "grow": ["becomes larger", "grows bigger", "is growing"],
    "shrink": ["is shrinking", "gets smaller", "becomes smaller"],
    "jump": ["jumps up and lands", "is jumping", "jumps up", "hops up"],
    "appear": ["appears", "comes out", "becomes visible"],
    "disappear": ["disappears", "fades out", "goes away", "is gone"],
}
QUERY_TEMPLATES = [
    "{object} {action}",
    "{object} {action}",
    "{object} {action} in the {scene}",
    "in the {scene}, {object} {action}",
    "then {object} {action}",
    "{object} suddenly {action}",
]

FRAME_SIZE = 64
VIDEO_FPS = 8
DRIFT_SPEED = 1.0  # pixels per second when an object is idle (slow: events must stand out)
MOVE_DISTANCE = 24.0  # more than one 3 x 3 position cell (21.3 px): a move changes the caption's cell
JUMP_HEIGHT = 16.0
EDGE = 8.0  # objects' centres stay this far from the frame's edges
GROW, SHRINK = 1.6, 0.55  # size factors of "grow" / "shrink"
# a small (8 px) or big (12 px) object may grow or shrink once, not again (no 30 px or 2 px objects)
GROW_FROM_AT_MOST, SHRINK_FROM_AT_LEAST = 12.5, 7.5


@dataclass
class ObjectSpec:
    shape: str
    colour: str
    size: str
    x: float
    y: float
    drift: tuple[float, float]
    angle: float = 0.0

    def words(self, rng: np.random.Generator, with_size: bool) -> str:
        noun = SHAPE_NOUNS[self.shape][int(rng.integers(len(SHAPE_NOUNS[self.shape])))]
        size = f"{self.size} " if with_size else ""
        return f"{size}{self.colour} {noun}"


@dataclass
class Event:
    obj: int
    action: str
    start: float
    end: float


@dataclass
class VideoSpec:
    video_id: str
    seed: int
    scene: str
    duration: float
    objects: list[ObjectSpec]
    events: list[Event] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return round(self.duration * VIDEO_FPS)


# --------------------------------------------------------------------------- sampling


def sample_video(
    seed: int,
    index: int,
    colours: list[str],
    min_duration: float = 8.0,
    max_duration: float = 20.0,
    prefix: str = "syn",
    acting_colours: list[str] | None = None,
) -> VideoSpec:
    """A video specification from (seed, prefix, index) alone.

    World v6: 2-3 objects of *distinct* colours; the first two act, a third only drifts (a
    distractor). Objects take their colours from ``colours``; with ``acting_colours`` (the
    novel-word OOD split) the two actors take two of those colours, so every OOD query names one
    and the colour word is what tells the two actors apart, as in the IID splits.
    """
    rng = np.random.default_rng([seed, zlib.crc32(prefix.encode()), index])
    duration = round(float(rng.uniform(min_duration, max_duration)) * VIDEO_FPS) / VIDEO_FPS
    scene = SCENES[int(rng.integers(len(SCENES)))]
    count = int(rng.choice([2, 3], p=[0.55, 0.45]))
    if acting_colours:
        actor_colours = [str(c) for c in rng.permutation(acting_colours)[:ACTORS]]
        if len(actor_colours) < ACTORS:
            actor_colours += [str(rng.choice(acting_colours))]  # one novel colour: the shape tells them apart
    else:
        actor_colours = []
    objects: list[ObjectSpec] = []
    used: set[tuple[str, str]] = set()
    while len(objects) < count:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        if len(objects) < len(actor_colours):
            colour = actor_colours[len(objects)]
        else:
            # distinct colours: the tiny CLIP knows colour (zero-shot ~100%) but hardly shape (~44%),
            # so a same-colour pair would hinge on the word the features cannot show (v5: 39% of
            # queries had a same-colour object beside their actor)
            free = [c for c in colours if c not in {o.colour for o in objects}]
            colour = free[int(rng.integers(len(free)))]
        if (shape, colour) in used:
            continue
        used.add((shape, colour))
        size = list(SIZES)[int(rng.integers(len(SIZES)))]
        x, y = _free_position(rng, objects)
        direction = float(rng.uniform(0, 2 * math.pi))
        objects.append(ObjectSpec(shape, colour, size, x, y, (math.cos(direction), math.sin(direction))))
    spec = VideoSpec(f"{prefix}{index:05d}", seed, scene, duration, objects)
    spec.events = _sample_events(rng, spec, list(range(min(ACTORS, count))))
    return spec


ACTORS = 2  # objects that act in a video; a third one only drifts
# Probability that an event repeats an action the other actor already did (when it can): such an
# event needs the object words, the others need the action words, and many need both.
SHARED_ACTION = 0.6


def _free_position(rng: np.random.Generator, objects: list[ObjectSpec]) -> tuple[float, float]:
    margin = 14.0
    best = None
    for _ in range(30):
        x, y = (float(v) for v in rng.uniform(margin, FRAME_SIZE - margin, size=2))
        distance = min((math.hypot(x - o.x, y - o.y) for o in objects), default=99.0)
        if distance > 22:
            return x, y
        if best is None or distance > best[0]:
            best = (distance, x, y)
    return best[1], best[2]


def _sample_events(rng: np.random.Generator, spec: VideoSpec, actors: list[int]) -> list[Event]:
    """3-5 non-overlapping events, each (object, action) at most once per video, so every query
    has exactly one answer (v5: 7.6% of queries had two). The actors take turns (the one that acted
    less goes next, mostly) and an event repeats the other actor's action with ``SHARED_ACTION``."""
    count = int(rng.integers(3, 6))
    slots = []
    cursor = float(rng.uniform(0.3, 1.0))
    for _ in range(count):
        length = float(rng.uniform(1.5, 3.0))
        if cursor + length > spec.duration - 0.3:
            break
        slots.append((round(cursor, 2), round(cursor + length, 2)))
        cursor += length + float(rng.uniform(0.4, 1.2))
    events: list[Event] = []
    appeared: set[int] = set()
    gone: set[int] = set()
    for index, (start, end) in enumerate(slots):
        candidates = [i for i in actors if i not in gone]
        if not candidates:
            break
        turns = [sum(e.obj == i for e in events) for i in candidates]
        fewest = [i for i, n in zip(candidates, turns) if n == min(turns)]
        obj = int(rng.choice(fewest)) if rng.random() < 0.8 else int(rng.choice(candidates))
        spec.events = events  # the object's state at ``start`` follows from the events so far
        actions = feasible_actions(object_states(spec, start)[obj])
        if index == len(slots) - 1 and obj not in appeared:
            actions.append("disappear")
        if not any(e.obj == obj for e in events):
            actions.append("appear")
        done = {e.action for e in events if e.obj == obj}
        actions = [a for a in actions if a not in done]
        if not actions:
            continue
        # the same action by the other actor makes the object words necessary
        shared = [e.action for e in events if e.obj != obj and e.action in actions]
        action = str(rng.choice(shared)) if shared and rng.random() < SHARED_ACTION else str(rng.choice(actions))
        if action == "appear":
            appeared.add(obj)
        if action == "disappear":
            gone.add(obj)
        events.append(Event(obj, action, start, end))
    spec.events = events
    return events


def feasible_actions(state: ObjectState) -> list[str]:
    """The actions an object in ``state`` can do visibly: a full move inside the frame, a jump
    that does not leave it, growing only while not yet big, shrinking only while not yet small."""
    room = {
        "left": state.x - EDGE,
        "right": FRAME_SIZE - EDGE - state.x,
        "up": state.y - EDGE,
        "down": FRAME_SIZE - EDGE - state.y,
    }
    actions = [direction for direction, space in room.items() if space >= MOVE_DISTANCE]
    if state.scale <= GROW_FROM_AT_MOST:
        actions.append("grow")
    if state.scale >= SHRINK_FROM_AT_LEAST:
        actions.append("shrink")
    if state.y - JUMP_HEIGHT >= EDGE - 2:
        actions.append("jump")
    return actions


# --------------------------------------------------------------------------- queries


def describe(spec: VideoSpec, obj: int, rng: np.random.Generator) -> str:
    """A noun phrase naming an object; the size is added when colour + shape are ambiguous."""
    target = spec.objects[obj]
    ambiguous = any(
        o.colour == target.colour and o.shape == target.shape for i, o in enumerate(spec.objects) if i != obj
    )
    with_size = ambiguous or rng.random() < 0.35
    article = "the" if rng.random() < 0.7 else "a"
    return f"{article} {target.words(rng, with_size)}"


def event_query_parts(spec: VideoSpec, event: Event, rng: np.random.Generator) -> tuple[str, str, str]:
    """(sentence, object phrase, action phrase) of one event: the generator knows the split the
    paper's rule should find (object phrase in Q^s, action phrase in Q^d), so it can be audited."""
    phrases = ACTION_PHRASES[event.action]
    template = QUERY_TEMPLATES[int(rng.integers(len(QUERY_TEMPLATES)))]
    obj = describe(spec, event.obj, rng)
    action = phrases[int(rng.integers(len(phrases)))]
    return template.format(object=obj, action=action, scene=spec.scene), obj, action


def event_query(spec: VideoSpec, event: Event, rng: np.random.Generator) -> str:
    return event_query_parts(spec, event, rng)[0]


def video_query_parts(spec: VideoSpec) -> list[tuple[str, str, str]]:
    """(sentence, object phrase, action phrase) of each event, the same sentences as ``video_queries``."""
    rng = np.random.default_rng([spec.seed, 7919, zlib.crc32(spec.video_id.encode())])
    return [event_query_parts(spec, event, rng) for event in spec.events]


def video_queries(spec: VideoSpec) -> list[tuple[float, float, str]]:
    rng = np.random.default_rng([spec.seed, 7919, zlib.crc32(spec.video_id.encode())])
    return [(event.start, event.end, event_query(spec, event, rng)) for event in spec.events]


def query_identifiability(specs: list[VideoSpec]) -> dict[str, float]:
    """Shares (percent) of a split's queries singled out within their video by each part of the sentence."""
    counts = {"action alone": 0, "colour alone": 0, "both needed": 0, "ambiguous": 0}
    queries = 0
    acting = 0
    for spec in specs:
        acting += len({e.obj for e in spec.events})
        for event in spec.events:
            queries += 1
            colour = spec.objects[event.obj].colour
            others = [e for e in spec.events if e is not event]
            by_action = all(e.action != event.action for e in others)
            by_colour = all(spec.objects[e.obj].colour != colour for e in others)
            by_both = all(e.obj != event.obj or e.action != event.action for e in others)
            if not by_both:
                counts["ambiguous"] += 1
            elif by_action:
                counts["action alone"] += 1
            elif by_colour:
                counts["colour alone"] += 1
            else:
                counts["both needed"] += 1
    shares = {name: 100.0 * value / max(1, queries) for name, value in counts.items()}
    shares["queries"] = queries
    shares["acting objects per video"] = acting / max(1, len(specs))
    return shares


POSITION_PHRASES = [
    ["at the top left", "at the top", "at the top right"],
    ["on the left", "in the centre", "on the right"],
    ["at the bottom left", "at the bottom", "at the bottom right"],
]


def position_cell(x: float, y: float) -> int:
    """Which of the 3 x 3 cells of the frame a point lies in (row-major)."""
    column = min(2, max(0, int(x / FRAME_SIZE * 3)))
    row = min(2, max(0, int(y / FRAME_SIZE * 3)))
    return row * 3 + column


def static_caption(objects: list[ObjectSpec], scene: str, rng: np.random.Generator) -> str:
    """A pre-training caption: objects, colours, sizes, where they are and the scene; never an
    action word. (Positions are what a still image shows; without them the tiny CLIP's global
    feature does not encode where objects are, and no motion could be seen in a video.)"""
    parts = []
    for obj in objects:
        cell = position_cell(obj.x, obj.y)
        parts.append(f"a {obj.words(rng, with_size=True)} {POSITION_PHRASES[cell // 3][cell % 3]}")
    if len(parts) == 1:
        listing = parts[0]
    else:
        listing = ", ".join(parts[:-1]) + " and " + parts[-1]
    if not parts:
        return f"an empty {scene}"
    return f"{listing} in the {scene}"


# --------------------------------------------------------------------------- rendering

_GRID = np.stack(np.meshgrid(np.arange(FRAME_SIZE) + 0.5, np.arange(FRAME_SIZE) + 0.5, indexing="xy"), axis=-1)


def background(scene: str, seed: int) -> np.ndarray:
    """A [64, 64, 3] float background for a named scene (a little texture, muted colours)."""
    rng = np.random.default_rng([seed, 31])
    y = _GRID[..., 1:2] / FRAME_SIZE
    noise = rng.normal(0, 0.02, (FRAME_SIZE, FRAME_SIZE, 1))
    if scene == "forest":
        image = np.array([0.1, 0.3, 0.12]) * (0.8 + 0.4 * y) + noise
        for trunk in rng.uniform(0, FRAME_SIZE, 5):
            image[:, int(trunk) : int(trunk) + 2] *= 0.6
    elif scene == "beach":
        sky, sand = np.array([0.45, 0.65, 0.8]), np.array([0.62, 0.55, 0.38])
        image = np.where(y < 0.45, sky, sand) + noise
    elif scene == "night":
        image = np.array([0.04, 0.05, 0.16]) * (1.2 - 0.5 * y) + noise * 0.5
        for _ in range(14):
            px, py = rng.integers(0, FRAME_SIZE, 2)
            image[py, px] = 0.85
    elif scene == "desert":
        image = np.array([0.68, 0.45, 0.25]) * (0.85 + 0.3 * y) + noise
    elif scene == "snow":
        image = np.array([0.78, 0.8, 0.84]) - 0.15 * y + noise
    elif scene == "city":
        image = np.array([0.3, 0.3, 0.33]) + noise
        for _ in range(6):
            left, width, height = int(rng.integers(0, 56)), int(rng.integers(5, 12)), int(rng.integers(15, 45))
            image[FRAME_SIZE - height :, left : left + width] = 0.18 + 0.1 * rng.random()
    else:
        raise ValueError(f"unknown scene {scene}")
    return np.clip(image, 0, 1)


def shape_mask(shape: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage [64, 64] of a shape centred at (cx, cy) with the given radius."""
    dx = (_GRID[..., 0] - cx) / radius
    dy = (_GRID[..., 1] - cy) / radius
    cos, sin = math.cos(angle), math.sin(angle)
    x, y = cos * dx + sin * dy, -sin * dx + cos * dy
    r = np.hypot(x, y)
    if shape == "circle":
        distance = r - 1.0
    elif shape == "ring":
        distance = np.abs(r - 0.72) - 0.28
    elif shape == "square":
        distance = np.maximum(np.abs(x), np.abs(y)) - 0.82
    elif shape == "triangle":
        # equilateral, pointing up (image rows grow downwards)
        distance = np.maximum.reduce([-y * 0.5 + np.abs(x) * 0.866 - 0.5, y - 0.5]) * 1.3
    elif shape == "star":
        theta = np.arctan2(y, x) + math.pi / 2
        boundary = 0.55 + 0.45 * (0.5 + 0.5 * np.cos(5 * theta)) ** 2
        distance = r - boundary
    elif shape == "cross":
        arm = 0.32
        distance = np.minimum(
            np.maximum(np.abs(x) - arm, np.abs(y) - 1.0), np.maximum(np.abs(y) - arm, np.abs(x) - 1.0)
        )
    else:
        raise ValueError(f"unknown shape {shape}")
    return np.clip(0.5 - distance * radius, 0.0, 1.0)


@dataclass
class ObjectState:
    x: float
    y: float
    scale: float
    angle: float
    alpha: float


def object_states(spec: VideoSpec, time: float) -> list[ObjectState]:
    """Where every object is at ``time`` (seconds): idle drift, then its events replayed in order."""
    states = []
    for index, obj in enumerate(spec.objects):
        events = sorted((e for e in spec.events if e.obj == index), key=lambda e: e.start)
        x, y, scale, angle = obj.x, obj.y, 1.0, obj.angle
        alpha = 0.0 if events and events[0].action == "appear" else 1.0
        dx, dy = obj.drift
        cursor, lift, acting = 0.0, 0.0, False
        for event in events:
            if time <= event.start:
                break
            if alpha > 0:  # idle drift up to the event; an object drifts only while visible
                x, y, dx, dy = _drift(x, y, dx, dy, event.start - cursor)
            progress = min(1.0, (time - event.start) / (event.end - event.start))
            smooth = 0.5 - 0.5 * math.cos(math.pi * progress)
            action = event.action
            if action in ("left", "right"):
                target = min(max(x + (MOVE_DISTANCE if action == "right" else -MOVE_DISTANCE), EDGE), FRAME_SIZE - EDGE)
                x += (target - x) * smooth
            elif action in ("up", "down"):
                target = min(max(y + (MOVE_DISTANCE if action == "down" else -MOVE_DISTANCE), EDGE), FRAME_SIZE - EDGE)
                y += (target - y) * smooth
            elif action == "grow":
                scale *= 1.0 + (GROW - 1.0) * smooth
            elif action == "shrink":
                scale *= 1.0 - (1.0 - SHRINK) * smooth
            elif action == "jump":
                lift = min(JUMP_HEIGHT, y - 6.0) * math.sin(math.pi * progress)
            elif action == "appear":
                alpha = smooth
            elif action == "disappear":
                alpha = 1.0 - smooth
            cursor = event.end
            if progress < 1.0:
                acting = True
                break
        if not acting and time > cursor and alpha > 0:
            x, y, dx, dy = _drift(x, y, dx, dy, time - cursor)
        states.append(ObjectState(x, y - lift, scale * SIZES[obj.size], angle, alpha))
    return states


# What counts as a visible change of an object (``event_change``): half a 3 x 3 position cell of
# the frame, a size ratio of 1.25, or half the opacity.
VISIBLE_SHIFT = FRAME_SIZE / 3 / 2
VISIBLE_SIZE_RATIO = 1.25
VISIBLE_OPACITY = 0.5


@dataclass
class Change:
    shift: float  # pixels between the first and last frame's centre
    size_ratio: float  # last / first radius
    opacity: float  # |last - first| opacity
    visible_at_end: bool
    visible_at_peak: bool  # at some time within the event (a jump comes back down)


def _visible(first: ObjectState, other: ObjectState) -> tuple[float, float, float, bool]:
    shift = math.hypot(other.x - first.x, other.y - first.y)
    ratio = max(other.scale, 1e-6) / max(first.scale, 1e-6)
    opacity = abs(other.alpha - first.alpha)
    resized = abs(math.log(ratio)) >= math.log(VISIBLE_SIZE_RATIO)
    visible = shift >= VISIBLE_SHIFT or resized or opacity >= VISIBLE_OPACITY
    return shift, ratio, opacity, visible


def event_change(spec: VideoSpec, event: Event, samples: int = 9) -> Change:
    """How much ``event`` changes its object in the rendered frames (from the object states)."""
    states = [object_states(spec, t)[event.obj] for t in np.linspace(event.start, event.end, samples)]
    shift, ratio, opacity, at_end = _visible(states[0], states[-1])
    at_peak = any(_visible(states[0], state)[3] for state in states[1:])
    return Change(shift, ratio, opacity, at_end, at_peak)


def _drift(x: float, y: float, dx: float, dy: float, seconds: float) -> tuple[float, float, float, float]:
    x, dx = _bounce(x + dx * DRIFT_SPEED * seconds, dx)
    y, dy = _bounce(y + dy * DRIFT_SPEED * seconds, dy)
    return x, y, dx, dy


def _bounce(position: float, direction: float) -> tuple[float, float]:
    low, high = 8.0, FRAME_SIZE - 8.0
    if position < low:
        return 2 * low - position, -direction
    if position > high:
        return 2 * high - position, -direction
    return position, direction


def draw(base: np.ndarray, objects: list[ObjectSpec], states: list[ObjectState]) -> np.ndarray:
    """Composite objects (with a dark outline, so they read on any scene) onto a background."""
    image = base.copy()
    for obj, state in zip(objects, states):
        if state.alpha <= 0:
            continue
        outline = shape_mask(obj.shape, state.x, state.y, state.scale + 1.2, state.angle)
        fill = shape_mask(obj.shape, state.x, state.y, state.scale, state.angle)
        image = image * (1 - outline[..., None] * state.alpha * 0.8)
        image = (
            image * (1 - fill[..., None] * state.alpha) + np.array(COLOURS[obj.colour]) * fill[..., None] * state.alpha
        )
    return image


def render_frames(spec: VideoSpec) -> np.ndarray:
    """All frames [T, 64, 64, 3] uint8 of a video at VIDEO_FPS."""
    base = background(spec.scene, spec.seed * 100003 + zlib.crc32(spec.video_id.encode()))
    frames = np.empty((spec.num_frames, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    for index in range(spec.num_frames):
        image = draw(base, spec.objects, object_states(spec, index / VIDEO_FPS))
        frames[index] = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return frames


def write_video(path, frames: np.ndarray, fps: int = VIDEO_FPS) -> None:
    """Lossless H.264 via PyAV (yuv420p), so the real decoding path reads it back."""
    import av

    container = av.open(str(path), "w")
    # lossless (qp 0): the decoded frames are exactly the yuv420p frames, whatever the encoder decides.
    # Lossy x264 made different decisions under CPU load (~2% of videos differed between builds).
    stream = container.add_stream("libx264", rate=fps, options={"qp": "0", "preset": "veryfast"})
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = "yuv420p"
    for frame in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


__all__ = [
    "ACTIONS",
    "ACTION_PHRASES",
    "COLOURS",
    "POSITION_PHRASES",
    "SCENES",
    "SHAPES",
    "SHAPE_NOUNS",
    "SIZES",
    "VIDEO_FPS",
    "Change",
    "Event",
    "ObjectSpec",
    "VideoSpec",
    "background",
    "draw",
    "event_change",
    "event_query",
    "event_query_parts",
    "feasible_actions",
    "object_states",
    "position_cell",
    "query_identifiability",
    "render_frames",
    "sample_video",
    "shape_mask",
    "static_caption",
    "video_queries",
    "video_query_parts",
    "write_video",
]
