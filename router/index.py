"""Which routes a message can match: per channel, found by a field's value, or screened.

A channel's plan holds the routes tried for every message of that channel (`always`), the
routes found by a word a field equals (`lookups`), and screens: one RE2 search for the routes
that each need a pattern on the same field (`matches`, `contains` a text, an `or` of those).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from intake.message import Message
from intake.patterns import PatternInvalid, PatternSet

from .compile import MATCH_MAX_CHARS, CompiledCondition, CompiledRoute, as_word
from .paths import MISSING, Reader

SCREEN_MIN_ROUTES = 4  # below this, testing the routes one by one is as cheap
# Keys with few values: a route keyed on one alone is tried with the others (and screened).
WEAK_KEYS = frozenset({"account", "kind"})


@dataclass(frozen=True, slots=True)
class Screen:
    """The routes of a channel that each need a pattern on the same key (`matches`, `contains`
    a text, or an `or` of those), wherever they stand in the file.

    One search with their patterns joined says whether any of them can match: when none can
    (the common case, a message for the default route), all of them are skipped at once
    instead of searching route by route. When some can, RE2's set search names them, and only
    those routes are tried.
    """

    read: Reader
    patterns: PatternSet
    routes: tuple[CompiledRoute, ...]  # in file order
    # position in the RuleSet's `routes` -> the index of the condition the screen answers
    pattern_at: dict[int, int]
    # False when a pattern stands for `contains`, which reads the whole text: a text longer
    # than `matches` reads is then not screened.
    bounded: bool = True

    def narrow(self, message: Message) -> Sequence[CompiledRoute] | None:
        """The routes worth trying (those whose pattern is found); None: all."""
        value = self.read(message)
        if type(value) is not str:
            # `matches` and `contains` hold only for text here: nothing or MISSING rules all
            # out; a list or an object (`contains` an element or key) is tried route by route.
            return () if value is None or value is MISSING else None
        if not self.bounded and len(value) > MATCH_MAX_CHARS:
            return None
        if not self.patterns.any(value, MATCH_MAX_CHARS):
            return ()
        found = self.patterns.which(value, MATCH_MAX_CHARS)
        if not found:  # RE2's set search gave up on this text: try every route
            return None
        routes = self.routes
        return [routes[i] for i in found]


@dataclass(frozen=True, slots=True)
class ChannelPlan:
    """The routes that can match one channel: tried always, or found by a field's value."""

    always: tuple[CompiledRoute, ...]
    # (reader of a field, value -> the routes keyed on that field and value), one per field
    lookups: tuple[tuple[Reader, dict[str, tuple[CompiledRoute, ...]]], ...]
    screens: tuple[Screen, ...] = ()

    def screened(self, message: Message,
                 ruled_out: list[Narrowed] | None = None) -> Sequence[CompiledRoute]:
        """`always` and the screened routes a screen does not rule out, in file order (each
        screen that ruled routes out and the routes it kept are added to `ruled_out`)."""
        if not self.screens:
            return self.always
        found: list[CompiledRoute] | None = None
        for screen in self.screens:
            narrowed = screen.narrow(message)
            if narrowed is None:
                narrowed = screen.routes
            elif ruled_out is not None:
                ruled_out.append((screen, narrowed))
            if narrowed:
                if found is None:
                    found = list(self.always)
                found.extend(narrowed)
        if found is None:
            return self.always
        found.sort(key=_position)
        return found

    def candidates(self, message: Message,
                   ruled_out: list[Narrowed] | None = None) -> Sequence[CompiledRoute]:
        """The routes worth testing, in order; every other route is certainly false."""
        always = self.screened(message, ruled_out)
        if not self.lookups:
            return always
        found: list[CompiledRoute] = list(always)
        for read, index in self.lookups:
            value = read(message)
            if type(value) is str:
                hit = index.get(value)
                if hit:
                    found.extend(hit)
            elif type(value) is list:
                for item in value:
                    hit = index.get(as_word(item))
                    if hit:
                        found.extend(hit)
            elif value is not None and value is not MISSING:
                hit = index.get(as_word(value))
                if hit:
                    found.extend(hit)
        if len(found) > len(always):
            found.sort(key=_position)
        return found


# A screen that ruled routes out, and the routes of its run it kept.
Narrowed = tuple[Screen, Sequence[CompiledRoute]]


def _position(route: CompiledRoute) -> int:
    return route.position


def screened_false(ruled_out: Sequence[Narrowed]) -> dict[int, int]:
    """Route position -> the condition (its `matches`) a screen found false for that route."""
    known: dict[int, int] = {}
    for screen, kept in ruled_out:
        known.update(screen.pattern_at)
        for route in kept:
            del known[route.position]
    return known


def plan_channel(routes: Sequence[CompiledRoute], channel: str) -> ChannelPlan:
    tried: list[CompiledRoute] = []
    lookups: dict[str, tuple[Reader, dict[str, list[CompiledRoute]]]] = {}
    for route in routes:
        if route.channels is not None and channel not in route.channels:
            continue
        if route.key is None or route.key.key is None or (
                route.key.label in WEAK_KEYS and route.pattern_at >= 0):
            # An account or kind narrows little: a pattern the route needs narrows more.
            tried.append(route)
            continue
        _, index = lookups.setdefault(route.key.label, (route.key.read, {}))
        for word in route.key.key:
            index.setdefault(word, []).append(route)
    screens = _screens(tried)
    screened = {route.position for screen in screens for route in screen.routes}
    return ChannelPlan(
        always=tuple(r for r in tried if r.position not in screened),
        lookups=tuple((read, {word: tuple(found) for word, found in index.items()})
                      for read, index in lookups.values()),
        screens=screens)


def _screen_condition(route: CompiledRoute) -> CompiledCondition | None:
    """A pattern test the route needs (its conditions all must hold)."""
    return route.conditions[route.pattern_at] if route.pattern_at >= 0 else None


def _screens(tried: Sequence[CompiledRoute]) -> tuple[Screen, ...]:
    """A screen per key that at least SCREEN_MIN_ROUTES routes each need a pattern on."""
    by_key: dict[str, list[tuple[CompiledRoute, CompiledCondition]]] = {}
    for route in tried:
        condition = _screen_condition(route)
        if condition is not None:
            by_key.setdefault(condition.label, []).append((route, condition))
    screens: list[Screen] = []
    for needing in by_key.values():
        if len(needing) < SCREEN_MIN_ROUTES:
            continue
        try:
            # RE2 scopes flags to the group, so `(?i)` patterns join as they are.
            joined = PatternSet([c.pattern for _, c in needing if c.pattern is not None])
        except PatternInvalid:  # together past RE2's memory budget: no screen
            continue
        screens.append(Screen(
            read=needing[0][1].read, patterns=joined, routes=tuple(r for r, _ in needing),
            pattern_at={r.position: r.pattern_at for r, _ in needing},
            bounded=all(c.bounded for _, c in needing)))
    return tuple(screens)
