"""Hot reload of the routing rules: poll the config file(s), swap in a valid new RuleSet whole.

A change is picked up without a restart. A new config that does not validate, lints with an
error (a shadowed or unreachable route, ...) or fails one of its inline tests is refused: the
problems are logged (`rules_refused`) and kept in `last_error`, and the old RuleSet stays in
force. The swap is one attribute assignment, so a decision in flight finishes on the RuleSet it
started with.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from intake.config import ROUTING_SECTIONS, load_document, merge_rules
from intake.errors import ConfigInvalid
from intake.logging import get_logger
from intake.settings import IntakeSettings

from .metrics import RULES_RELOAD, SERVICE
from .rules import RuleSet, load_rules


def _log() -> Any:
    # Bound per call: binding at import would freeze the logger before logging is configured.
    return get_logger(component="rules")

Fingerprint = tuple[tuple[str, str], ...]  # (path, sha256 of its bytes) per watched file


class RulesHolder:
    """Owns the RuleSet in force; `check()` reloads when the file(s) changed."""

    def __init__(self, config_path: Path, rules_path: Path | None = None) -> None:
        self.config_path = Path(config_path)
        self.rules_path = Path(rules_path) if rules_path else None
        self._current: RuleSet | None = None
        self._fingerprint: Fingerprint | None = None  # of the files behind `current`
        self._refused: Fingerprint | None = None  # last refused content, refused once
        self.last_error: list[str] | None = None

    @classmethod
    def from_settings(cls, settings: IntakeSettings) -> RulesHolder:
        return cls(settings.config_path, settings.rules_path)

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.config_path, self.rules_path) if self.rules_path else (self.config_path,)

    @property
    def current(self) -> RuleSet:
        if self._current is None:
            raise RuntimeError("no rules loaded yet: call RulesHolder.load() first")
        return self._current

    def load(self) -> RuleSet:
        """Load the rules at start; raise ConfigInvalid when they are wrong (do not start)."""
        contents = self._read()
        rules, fingerprint = self._build(contents)
        self._current, self._fingerprint, self.last_error = rules, fingerprint, None
        _log().info("rules_loaded", revision=rules.revision, routes=len(rules.routes),
                 source=rules.source)
        return rules

    def check(self) -> bool:
        """Reload if the file(s) changed; True when a new RuleSet was swapped in.

        Never raises for a bad config: it is refused, logged once per content, and the old
        RuleSet stays in force.
        """
        try:
            contents = self._read()
        except ConfigInvalid as exc:  # a missing file (an editor's rename in progress, a typo)
            return self._refuse(tuple(("", p) for p in exc.problems), exc.problems)
        fingerprint = _fingerprint(contents)
        if fingerprint == self._fingerprint:
            self.last_error = None  # back to the content in force (e.g. a bad edit undone)
            return False
        if fingerprint == self._refused:
            return False
        try:
            rules, built_from = self._build(contents)
        except ConfigInvalid as exc:
            return self._refuse(fingerprint, exc.problems)
        if built_from != fingerprint:
            return False  # written again while we parsed it: take it on the next poll
        old = self._current
        self._fingerprint, self._refused, self.last_error = fingerprint, None, None
        if old is not None and old.revision == rules.revision:
            return False  # only the part of the config the router does not read changed
        self._current = rules
        RULES_RELOAD.labels(service=SERVICE, result="ok").inc()
        _log().info("rules_reloaded", old_revision=old.revision if old else None,
                 new_revision=rules.revision, routes=len(rules.routes))
        return True

    async def watch(self, interval_s: float = 1.0) -> None:
        """Poll every `interval_s` until cancelled; parsing runs off the event loop."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.check)
            except Exception:  # a watcher that dies silently would freeze the rules forever
                _log().exception("rules_check_failed")

    def _refuse(self, fingerprint: Fingerprint, problems: list[str]) -> bool:
        if fingerprint != self._refused:
            RULES_RELOAD.labels(service=SERVICE, result="refused").inc()
            _log().warning("rules_refused", problems=problems,
                        revision_in_force=self._current.revision if self._current else None)
        self._refused, self.last_error = fingerprint, problems
        return False

    def _read(self) -> dict[Path, bytes]:
        contents: dict[Path, bytes] = {}
        for path in self.paths:
            try:
                contents[path] = path.read_bytes()
            except OSError as exc:
                raise ConfigInvalid([f"{path}: cannot read: {exc.strerror}"]) from exc
        return contents

    def _build(self, contents: dict[Path, bytes]) -> tuple[RuleSet, Fingerprint]:
        """Parse and compile; return the RuleSet and the fingerprint of what was parsed."""
        doc = load_document(self.config_path)
        rules_doc = load_document(self.rules_path) if self.rules_path else None
        merged = merge_rules(doc, rules_doc)
        source = contents[self.config_path]
        if self.rules_path and rules_doc is not None:
            # The revision is the rules file's sha256, unless the main config still supplies a
            # routing section the rules file lacks: then both files, so either change shows.
            source = contents[self.rules_path]
            if any(key in doc.data and key not in rules_doc.data for key in ROUTING_SECTIONS):
                source += b"\0" + contents[self.config_path]
        rules = load_rules(merged, source)
        # load_document read the files again; this is what it most likely saw.
        return rules, _fingerprint(self._read())


def _fingerprint(contents: dict[Path, bytes]) -> Fingerprint:
    return tuple((str(path), hashlib.sha256(data).hexdigest()) for path, data in contents.items())

