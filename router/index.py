"""Which routes a message can match: per channel, found by a field's value, or screened.

A channel's plan holds the routes tried for every message of that channel (`always`), the
routes found by a word a field equals (`lookups`), and screens: one RE2 search for a run of
routes that each need a pattern on the same field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from intake.message import Message
from intake.patterns import PatternInvalid, PatternSet

from .compile import MATCH_MAX_CHARS, CompiledCondition, CompiledRoute, as_word
from .paths import MISSING, Reader

SCREEN_MIN_ROUTES = 4  # below this, testing the routes one by one is as cheap


@dataclass(frozen=True, slots=True)
class Screen:
    """A run of `always` routes that each test one field against a pattern.

    One search with their patterns joined says whether any of them can match: when none can
    (the common case, a message for the default route), the run is skipped at once instead
    of searching route by route. When some can, RE2's set search names them, and only those
    routes of the run are tried.
    """

    read: Reader
    patterns: PatternSet
    start: int  # the run is always[start:stop]
    stop: int
    routes: tuple[CompiledRoute, ...]  # always[start:stop]
    # position in the RuleSet's `routes` -> the index of the condition the screen answers
    pattern_at: dict[int, int]

    def narrow(self, message: Message) -> Sequence[CompiledRoute] | None:
        """The routes of the run worth trying (those whose pattern is found); None: all."""
        value = self.read(message)
        if type(value) is not str:
            # `matches` holds only for text: nothing or MISSING rules the run out.
            return () if value is None or value is MISSING else None
        if not self.patterns.any(value, MATCH_MAX_CHARS):
            return ()
        found = self.patterns.which(value, MATCH_MAX_CHARS)
        if not found:  # RE2's set search gave up on this text: try every route of the run
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
        """`always` without the routes a screen rules out (each screen that did so and the
        routes it kept are added to `ruled_out`, when given)."""
        if not self.screens:
            return self.always
        kept: list[CompiledRoute] | None = None
        done = 0
        for screen in self.screens:
            narrowed = screen.narrow(message)
            if narrowed is not None:
                if ruled_out is not None:
                    ruled_out.append((screen, narrowed))
                if kept is None:
                    kept = []
                kept.extend(self.always[done:screen.start])
                kept.extend(narrowed)
                done = screen.stop
        if kept is None:
            return self.always
        kept.extend(self.always[done:])
        return kept

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
    always: list[CompiledRoute] = []
    lookups: dict[str, tuple[Reader, dict[str, list[CompiledRoute]]]] = {}
    for route in routes:
        if route.channels is not None and channel not in route.channels:
            continue
        if route.key is None or route.key.key is None:
            always.append(route)
            continue
        _, index = lookups.setdefault(route.key.label, (route.key.read, {}))
        for word in route.key.key:
            index.setdefault(word, []).append(route)
    return ChannelPlan(always=tuple(always), lookups=tuple(
        (read, {word: tuple(found) for word, found in index.items()})
        for read, index in lookups.values()), screens=_screens(always))


def _screen_condition(route: CompiledRoute) -> CompiledCondition | None:
    """A `matches` test the route needs (its conditions all must hold)."""
    return route.conditions[route.pattern_at] if route.pattern_at >= 0 else None


def _screens(always: Sequence[CompiledRoute]) -> tuple[Screen, ...]:
    """Screens for the runs of consecutive routes that each need a pattern on one field."""
    screens: list[Screen] = []
    i = 0
    while i < len(always):
        first = _screen_condition(always[i])
        j = i + 1
        if first is not None:
            patterns = [first.pattern]
            while j < len(always) and (later := _screen_condition(always[j])) is not None \
                    and later.label == first.label:
                patterns.append(later.pattern)
                j += 1
            if j - i >= SCREEN_MIN_ROUTES:
                try:
                    # RE2 scopes flags to the group, so `(?i)` patterns join as they are.
                    joined = PatternSet([p for p in patterns if p is not None])
                except PatternInvalid:  # together past RE2's memory budget: no screen
                    joined = None
                if joined is not None:
                    screens.append(Screen(
                        read=first.read, patterns=joined, start=i, stop=j,
                        routes=tuple(always[i:j]),
                        pattern_at={r.position: r.pattern_at for r in always[i:j]}))
        i = j
    return tuple(screens)
