"""What the clip-wide rules of the object masks did to a clip, so that none acts unseen.

Some rules decide for many frames at once, and can empty a clip's masks or move them onto
something else: frames taken for repeats of an earlier frame, bars cut off the picture, a
video split into shots, frames whose motion is no evidence (the camera's motion misjudged),
the background fitted with several layers. Each one that touched a frame says so here:
`selfsup video masks` writes the list into `scores.json` (`rules`, per video) and prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RuleLog:
    """Entries `{"rule", "frames", "why"}`, one per rule that touched at least one frame;
    `frames` counts the frames it touched (in the clip as given, before any were set aside)."""

    entries: list[dict] = field(default_factory=list)

    def add(self, rule: str, frames: int, why: str) -> None:
        if frames > 0:
            self.entries.append({"rule": rule, "frames": int(frames), "why": why})

    def frames(self, rule: str) -> int:
        """How many frames `rule` touched (0 if it never fired)."""
        return sum(e["frames"] for e in self.entries if e["rule"] == rule)
