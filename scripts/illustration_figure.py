"""A friendly line-drawn person and the props around it, as SVG elements, from a pose.

A pose gives joint angles, not coordinates, so every figure has the same limb lengths
whatever it does. Angles are in degrees, counterclockwise from pointing right (90 is up,
-90 is down), in a panel 276 wide and 240 high whose y axis points down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

FIGURE = "#0f5257"  # the emails' teal
FIGURE_FAR = "#8fb3b5"  # the limbs on the far side of the body, paler for depth
PROP_FILL = "#e8efe9"
PROP_LINE = "#9bb0a6"
ARROW = "#c9774f"  # one muted warm accent, for movement only
EYE = "#ffffff"

TORSO = 54.0
NECK = 8.0
HEAD_RADIUS = 12.5
UPPER_ARM = 27.0
FOREARM = 25.0
THIGH = 38.0
SHIN = 36.0
FOOT = 11.0
SHOULDER_WIDTH = 30.0  # front and top views only
HIP_WIDTH = 18.0
LIMB_STROKE = 7.0
TORSO_STROKE = 10.0

Point = tuple[float, float]


def _r(value: float) -> str:
    """A coordinate as short, stable text: one decimal, no trailing zeros."""
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def step(origin: Point, angle: float, length: float) -> Point:
    radians = math.radians(angle)
    return origin[0] + length * math.cos(radians), origin[1] - length * math.sin(radians)


def _polyline(points: Sequence[Point], color: str, width: float) -> str:
    path = " ".join(f"{_r(x)},{_r(y)}" for x, y in points)
    return (
        f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="{_r(width)}" '
        'stroke-linecap="round" stroke-linejoin="round"/>'
    )


def _limb(root: Point, angles: Sequence[float], lengths: Sequence[float], color: str) -> str:
    points = [root]
    for angle, length in zip(angles, lengths, strict=False):
        points.append(step(points[-1], angle, length))
    return _polyline(points, color, LIMB_STROKE)


def _torso(hip: Point, shoulder: Point, bend: float) -> str:
    """Hip to shoulder; `bend` bows the back (positive: rounded to the left of travel)."""
    if not bend:
        return _polyline([hip, shoulder], FIGURE, TORSO_STROKE)
    mid = ((hip[0] + shoulder[0]) / 2, (hip[1] + shoulder[1]) / 2)
    dx, dy = shoulder[0] - hip[0], shoulder[1] - hip[1]
    length = math.hypot(dx, dy) or 1.0
    control = (mid[0] - dy / length * bend * 2, mid[1] + dx / length * bend * 2)
    return (
        f'<path d="M{_r(hip[0])},{_r(hip[1])} Q{_r(control[0])},{_r(control[1])} '
        f'{_r(shoulder[0])},{_r(shoulder[1])}" fill="none" stroke="{FIGURE}" '
        f'stroke-width="{_r(TORSO_STROKE)}" stroke-linecap="round"/>'
    )


def _head(neck_base: Point, neck_angle: float, face: float, eyes: int) -> str:
    neck_top = step(neck_base, neck_angle, NECK)
    centre = step(neck_top, neck_angle, HEAD_RADIUS - 2)
    parts = [
        _polyline([neck_base, neck_top], FIGURE, LIMB_STROKE),
        f'<circle cx="{_r(centre[0])}" cy="{_r(centre[1])}" r="{_r(HEAD_RADIUS)}" '
        f'fill="{FIGURE}"/>',
    ]
    # Eyes show which way the person looks: one in profile, two from the front, none from
    # behind.
    near_face = step(centre, face, 3 if eyes == 2 else 6.5)
    spots = {
        0: [],
        1: [step(near_face, face + 90, 2.5)],
        2: [step(near_face, face + 90, 4.5), step(near_face, face - 90, 4.5)],
    }[eyes]
    parts += [f'<circle cx="{_r(x)}" cy="{_r(y)}" r="1.8" fill="{EYE}"/>' for x, y in spots]
    return "".join(parts)


def _held(hand: Point, item: str) -> str:
    x, y = hand
    if item == "weight":
        return (
            f'<rect x="{_r(x - 5)}" y="{_r(y - 2)}" width="10" height="20" rx="4" '
            f'fill="{PROP_FILL}" stroke="{PROP_LINE}" stroke-width="2.5"/>'
        )
    if item == "phone":
        return (
            f'<rect x="{_r(x - 3)}" y="{_r(y - 12)}" width="7" height="13" rx="2" '
            f'fill="{PROP_FILL}" stroke="{FIGURE}" stroke-width="2"/>'
        )
    raise ValueError(f"unknown held item {item!r}")


def figure(pose: Mapping[str, Any]) -> str:
    """The person in `pose`: far limbs first, then body, head and near limbs."""
    hip: Point = (float(pose["hip"][0]), float(pose["hip"][1]))
    torso_angle = float(pose.get("torso", 90))
    front = pose.get("view", "side") == "front"
    shoulder = step(hip, torso_angle, TORSO)
    neck_angle = float(pose.get("neck", torso_angle))
    face = float(pose.get("face", 0 if not front else neck_angle))
    arms = pose.get("arms", [])
    legs = pose.get("legs", [])
    # `reach` shortens or lengthens the upper arm where it points toward the viewer.
    arm_lengths = (UPPER_ARM * float(pose.get("reach", 1)), FOREARM)
    leg_lengths = (THIGH, SHIN, FOOT)
    eyes = int(pose.get("eyes", 2 if front else 1))
    if front:
        across = torso_angle - 90
        shoulders = [
            step(shoulder, across, -SHOULDER_WIDTH / 2),
            step(shoulder, across, SHOULDER_WIDTH / 2),
        ]
        hips = [step(hip, across, -HIP_WIDTH / 2), step(hip, across, HIP_WIDTH / 2)]
        back = [_polyline(shoulders, FIGURE, LIMB_STROKE), _polyline(hips, FIGURE, LIMB_STROKE)]
        limbs = [_limb(hips[i], leg, leg_lengths, FIGURE) for i, leg in enumerate(legs)] + [
            _limb(shoulders[i], arm, arm_lengths, FIGURE) for i, arm in enumerate(arms)
        ]
        body = [*back, _torso(hip, shoulder, 0), *limbs, _head(shoulder, neck_angle, face, eyes)]
        return "".join(body)
    # Side view: index 0 is the near limb, index 1 the far one.
    far = [_limb(hip, leg, leg_lengths, FIGURE_FAR) for leg in legs[1:]]
    far += [_limb(shoulder, arm, arm_lengths, FIGURE_FAR) for arm in arms[1:]]
    near = [_limb(hip, leg, leg_lengths, FIGURE) for leg in legs[:1]]
    near += [_limb(shoulder, arm, arm_lengths, FIGURE) for arm in arms[:1]]
    parts = [*far, _torso(hip, shoulder, float(pose.get("bend", 0))), *near]
    parts.append(_head(shoulder, neck_angle, face, eyes))
    if "holds" in pose:
        hand = shoulder
        for angle, length in zip(arms[0], arm_lengths, strict=False):
            hand = step(hand, angle, length)
        parts.append(_held(hand, str(pose["holds"])))
    return "".join(parts)


def prop(spec: Mapping[str, Any]) -> str:
    """One prop: a floor, wall, chair, box, ball, towel roll, pillow, door frame or line."""
    kind = spec["kind"]
    # `accent: true` marks a prop that is the point of the picture (the shoulder blades).
    line = ARROW if spec.get("accent") else PROP_LINE
    style = f'fill="{PROP_FILL}" stroke="{line}" stroke-width="2.5"'
    if kind == "floor":
        y = float(spec["y"])
        return _line(float(spec.get("x1", 14)), y, float(spec.get("x2", 262)), y, PROP_LINE, 3)
    if kind == "wall":
        x, top, bottom = float(spec["x"]), float(spec.get("top", 22)), float(spec.get("y", 206))
        width = float(spec.get("width", 12))
        left = x - width if spec.get("side", "left") == "left" else x
        return _rect(left, top, width, bottom - top, 2, style)
    if kind == "box":
        x, y, w, h = (float(v) for v in spec["rect"])
        return _rect(x, y, w, h, float(spec.get("round", 4)), style)
    if kind == "ball":
        x, y, r = (float(v) for v in spec["at"])
        return f'<circle cx="{_r(x)}" cy="{_r(y)}" r="{_r(r)}" {style}/>'
    if kind == "roll":
        x, y, r = (float(v) for v in spec["at"])
        return (
            f'<circle cx="{_r(x)}" cy="{_r(y)}" r="{_r(r)}" {style}/>'
            f'<circle cx="{_r(x)}" cy="{_r(y)}" r="{_r(r * 0.45)}" fill="none" '
            f'stroke="{PROP_LINE}" stroke-width="2"/>'
        )
    if kind == "pillow":
        x, y, w, h = (float(v) for v in spec["rect"])
        return _rect(x, y, w, h, h / 2, style)
    if kind == "ribs":
        x, y, rx, ry = (float(v) for v in spec["at"])
        return (
            f'<ellipse cx="{_r(x)}" cy="{_r(y)}" rx="{_r(rx)}" ry="{_r(ry)}" fill="none" '
            f'stroke="{ARROW}" stroke-width="2.5" stroke-dasharray="5 4"/>'
        )
    if kind == "chair":
        return _chair(spec, style)
    if kind == "line":
        x1, y1, x2, y2 = (float(v) for v in spec["points"])
        return _line(x1, y1, x2, y2, PROP_LINE, float(spec.get("width", 3)))
    raise ValueError(f"unknown prop kind {kind!r}")


def _rect(x: float, y: float, w: float, h: float, rounding: float, style: str) -> str:
    return (
        f'<rect x="{_r(x)}" y="{_r(y)}" width="{_r(w)}" height="{_r(h)}" rx="{_r(rounding)}" '
        f"{style}/>"
    )


def _chair(spec: Mapping[str, Any], style: str) -> str:
    """A side-view chair: seat at (x, seat) with the backrest on the `back` side."""
    x, seat = float(spec["x"]), float(spec["seat"])
    floor = float(spec.get("floor", 206))
    width = float(spec.get("width", 44))
    back_height = float(spec.get("back", 50))
    back_x = x - 4 if spec.get("facing", "right") == "right" else x + width
    legs = "".join(
        _line(leg_x, seat + 5, leg_x, floor, PROP_LINE, 3.5) for leg_x in (x + 4, x + width - 4)
    )
    backrest = (
        f'<rect x="{_r(back_x)}" y="{_r(seat - back_height)}" width="6" '
        f'height="{_r(back_height + 5)}" rx="3" {style}/>'
        if back_height
        else ""
    )
    return (
        legs
        + backrest
        + f'<rect x="{_r(x)}" y="{_r(seat)}" width="{_r(width)}" height="7" rx="3" {style}/>'
    )


def _line(x1: float, y1: float, x2: float, y2: float, color: str, width: float) -> str:
    return (
        f'<line x1="{_r(x1)}" y1="{_r(y1)}" x2="{_r(x2)}" y2="{_r(y2)}" stroke="{color}" '
        f'stroke-width="{_r(width)}" stroke-linecap="round"/>'
    )


def arrow(points: Sequence[float], curve: float = 0) -> str:
    """A movement arrow from (x1, y1) to (x2, y2), bowed sideways by `curve`."""
    x1, y1, x2, y2 = (float(v) for v in points)
    mid = ((x1 + x2) / 2, (y1 + y2) / 2)
    dx, dy = x2 - x1, y2 - y1
    length = math.hypot(dx, dy) or 1.0
    control = (mid[0] - dy / length * curve, mid[1] + dx / length * curve)
    # The head points along the curve's last tangent, from the control point to the end.
    angle = math.atan2(y2 - control[1], x2 - control[0])
    wing = 7.0
    left = (x2 - wing * math.cos(angle - 0.5), y2 - wing * math.sin(angle - 0.5))
    right = (x2 - wing * math.cos(angle + 0.5), y2 - wing * math.sin(angle + 0.5))
    return (
        f'<path d="M{_r(x1)},{_r(y1)} Q{_r(control[0])},{_r(control[1])} {_r(x2)},{_r(y2)}" '
        f'fill="none" stroke="{ARROW}" stroke-width="3" stroke-linecap="round"/>'
        + _polyline([left, (x2, y2), right], ARROW, 3)
    )
