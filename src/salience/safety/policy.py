"""What the model is told about a flagged user: the pinned note, safe-messaging guidance, resources.

Resources are data (``config/resources/crisis_lines.yaml``), looked up by the tenant's
locale. The pinned note is rendered from the user's pinned safety memories, never from
their words: a category, a severity, dates and a count, so no method or detail a user
once described is ever repeated to the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from salience.model import MemoryItem
from salience.safety.detect import Flag
from salience.settings import ConfigError, CrisisResourceSettings, TenantSettings

SHIPPED_CRISIS_LINES = Path(__file__).resolve().parents[3] / "config" / "resources" / "crisis_lines.yaml"
CATEGORY_WORDS = {
    "suicidal_ideation": "suicidal thoughts",
    "self_harm": "self-harm",
    "abuse_or_violence": "being harmed by someone (abuse or violence)",
    "harm_to_others": "thoughts of harming others",
    "medical_emergency": "a medical emergency",
}
SAFE_MESSAGING = (
    "How to respond: take it seriously and stay warm and non-judgemental; if they may be in danger now, "
    "ask directly whether they are safe; encourage them to reach out to someone they trust and to the "
    "resources below, and offer them plainly; never describe methods, means or amounts; do not promise "
    "secrecy, minimise, or lecture; you are not a substitute for emergency help."
)


class _CrisisLines(BaseModel):
    model_config = ConfigDict(extra="forbid")

    regions: dict[str, list[CrisisResourceSettings]]
    fallback: list[CrisisResourceSettings]


@dataclass(frozen=True)
class SafetyPolicy:
    """One tenant's resources, resolved at start-up."""

    locale: str
    resources: tuple[CrisisResourceSettings, ...]

    def note(self, pinned: list[MemoryItem], flags: list[Flag]) -> str:
        """The safety part of the injected block; empty for a user never flagged."""
        safety_items = sorted((m for m in pinned if m.kind == "safety"), key=lambda m: m.created_at)
        if not safety_items and not flags:
            return ""
        lines = ["<safety>"]
        if safety_items:
            lines.append("Pinned safety note (always shown): this user has disclosed, in earlier messages:")
            lines.extend(summary_line(item) for item in safety_items)
        if flags:
            now = ", ".join(f"{CATEGORY_WORDS[f.category]} ({f.severity})" for f in flags)
            lines.append(f"Their latest message was flagged for: {now}. Respond to that first.")
        lines.append(SAFE_MESSAGING)
        lines.append(f"Crisis resources ({self.locale}):")
        lines.extend(f"- {r.name}: {r.contact}" for r in self.resources)
        lines.append("</safety>")
        return "\n".join(lines)


def summary_line(item: MemoryItem) -> str:
    """One category, compactly: its text carries category and latest severity; dates and count from the item."""
    first = item.created_at.date().isoformat()
    last = (item.last_reinforced_at or item.created_at).date().isoformat()
    when = first if first == last else f"first {first}, last {last}"
    times = "once" if item.mention_count == 1 else f"{item.mention_count} times"
    return f"- {item.text} ({times}; {when})"


def load_crisis_lines(path: Path) -> _CrisisLines:
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the crisis resources file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return _CrisisLines.model_validate(raw)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {reasons}") from None


def resources_for(lines: _CrisisLines, locale: str) -> list[CrisisResourceSettings]:
    """Full tag (en-GB), then region (GB), then language (en), then the international fallback."""
    tag = locale.replace("_", "-")
    parts = tag.split("-")
    for key in (tag, parts[-1].upper() if len(parts) > 1 else None, parts[0]):
        if key and key in lines.regions:
            return lines.regions[key]
    return lines.fallback


def crisis_lines_path(tenant: TenantSettings, config_directory: Path) -> Path:
    if tenant.safety.resources_file:
        return config_directory / tenant.safety.resources_file
    in_config = config_directory / "resources" / "crisis_lines.yaml"
    return in_config if in_config.exists() else SHIPPED_CRISIS_LINES


def build_policy(tenant: TenantSettings, config_directory: Path) -> SafetyPolicy:
    """The tenant's policy; a missing or malformed resources file stops start-up."""
    if tenant.safety.resources:
        return SafetyPolicy(tenant.safety.locale, tuple(tenant.safety.resources))
    lines = load_crisis_lines(crisis_lines_path(tenant, config_directory))
    return SafetyPolicy(tenant.safety.locale, tuple(resources_for(lines, tenant.safety.locale)))
