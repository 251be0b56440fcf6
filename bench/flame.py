"""Where the time goes: the top self-time functions and modules of a py-spy flame graph.

`python -m bench.flame bench/results/<run>/router.svg [...]`; the runner prints this for each
service after a PROFILE=1 run. Self time is a frame's samples less its children's.
"""

from __future__ import annotations

import html
import itertools
import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r'<title>(?P<title>[^<]*)</title><rect [^>]*y="(?P<y>[\d.]+)"[^>]*'
                   r'fg:x="(?P<x>\d+)" fg:w="(?P<w>\d+)"')
NAME = re.compile(r"^(?P<name>.*) \((?P<samples>[\d,]+) samples?, [\d.]+%\)$")


PROJECT = ("intake/", "router/", "ticket_core/", "connectors/")


def self_times(svg: str) -> tuple[Counter[str], Counter[str], int]:
    """Self and inclusive samples per `function (file:line)`, and the total, of a py-spy SVG.

    Inclusive counts a function once per stack (its outermost frame), so recursion does not
    count twice.
    """
    frames = []
    for match in FRAME.finditer(svg):
        title = NAME.match(html.unescape(match["title"]))
        if title is None:
            continue
        frames.append((float(match["y"]), int(match["x"]), int(match["w"]), title["name"]))
    by_depth: dict[float, list[tuple[int, int, str]]] = {}
    for y, x, w, name in frames:
        by_depth.setdefault(y, []).append((x, w, name))
    depths = sorted(by_depth)
    step = min((b - a for a, b in itertools.pairwise(depths)), default=16.0)
    counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for y, x, w, name in frames:
        children = sum(cw for cx, cw, _ in by_depth.get(y + step, ())
                       if x <= cx and cx + cw <= x + w)
        counts[name] += w - children
        function = re.sub(r":\d+\)$", ")", name)
        ancestors = (n for depth in depths if depth < y
                     for ax, aw, n in by_depth[depth] if ax <= x and x + w <= ax + aw)
        if not any(re.sub(r":\d+\)$", ")", a) == function for a in ancestors):
            inclusive[function] += w
    roots = by_depth.get(depths[0], []) if depths else []
    total = sum(w for _, w, _ in roots)
    return counts, inclusive, total


def module_of(name: str) -> str:
    match = re.search(r"\(([^():]+)(?::\d+)?\)$", name)
    if not match:
        return name
    path = match.group(1)
    parts = path.split("/")
    return parts[0] if len(parts) > 1 else path


def summary(path: Path, top: int = 8) -> str:
    counts, inclusive, total = self_times(path.read_text(encoding="utf-8"))
    if not total:
        return f"{path.name}: no samples"
    modules: Counter[str] = Counter()
    for name, samples in counts.items():
        modules[module_of(name)] += samples
    lines = [f"{path.name}: {total} samples"]
    lines.append("  by package: " + ", ".join(
        f"{name} {samples / total:.0%}" for name, samples in modules.most_common(top)))
    lines.append("  top functions (self):")
    lines.extend(f"    {samples / total:6.1%}  {name}" for name, samples in counts.most_common(top))
    ours = Counter({name: n for name, n in inclusive.items()
                    if any(f"({p}" in name for p in PROJECT) and "(intake/cli.py)" not in name})
    lines.append("  the gateway's own steps (inclusive):")
    lines.extend(f"    {samples / total:6.1%}  {name}" for name, samples in ours.most_common(top))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    for arg in argv:
        print(summary(Path(arg)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
