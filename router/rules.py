"""The routing rules, as one import: models, field paths, compiling, the index, deciding, loading.

`load_rules(doc, source_bytes)` validates the routing sections of a loaded `ConfigDocument`
(structure through `intake.config.validate`, then the cross-references: desks, skill groups,
categories, SLA policies, message field paths), every problem naming `file:line: field`. The
result is a `RuleSet`: immutable, compiled once per revision into closures, so `decide` reads the
message without parsing anything (tens of microseconds at a few hundred routes).

The parts, one module each: `models` (the config's routing sections and `cross_check`), `paths`
(`resolve_path` and readers), `compile` (conditions, targets and routes as closures), `index`
(per-channel plans: word lookups and pattern screens), `decide` (`RuleSet.decide` and its
explanation), `load` (`load_rules`).
"""

from __future__ import annotations

from .compile import (
    MATCH_MAX_CHARS,
    CompiledCondition,
    CompiledRoute,
    CompiledTarget,
    compile_route,
    compile_where,
)
from .decide import MAX_TRIED, SAW_MAX_CHARS, SAW_MAX_ITEMS, RuleSet, new_decision_id
from .index import SCREEN_MIN_ROUTES, ChannelPlan, Screen
from .load import load_rules
from .models import (
    CHANNELS,
    DEFAULT_ROUTE_ID,
    ID_PATTERN,
    LEAD_ROLE,
    MODE_ROLES,
    OPERATORS,
    Category,
    Condition,
    Declared,
    DefaultRoute,
    Delivery,
    Desk,
    Match,
    Route,
    RouteMode,
    RoutingConfig,
    SkillGroup,
    Target,
    cross_check,
    delivery_roles,
)
from .paths import MISSING, resolve_path

__all__ = [
    "CHANNELS", "DEFAULT_ROUTE_ID", "ID_PATTERN", "LEAD_ROLE", "MATCH_MAX_CHARS", "MAX_TRIED",
    "MISSING", "MODE_ROLES", "OPERATORS", "SAW_MAX_CHARS", "SAW_MAX_ITEMS", "SCREEN_MIN_ROUTES",
    "Category", "ChannelPlan", "CompiledCondition", "CompiledRoute", "CompiledTarget",
    "Condition", "Declared", "DefaultRoute", "Delivery", "Desk", "Match", "Route", "RouteMode",
    "RoutingConfig", "RuleSet", "Screen", "SkillGroup", "Target", "compile_route",
    "compile_where", "cross_check", "delivery_roles", "load_rules", "new_decision_id",
    "resolve_path",
]
