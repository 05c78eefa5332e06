"""Constants shared by the data pipeline and the model, so that `skillgpt.models` never imports
`skillgpt.data` (and the reverse) just to agree on them. No heavy imports: config and data load it."""
from __future__ import annotations

from typing import Union

# Placeholder text -> the negative id a tokenized prompt carries at each of its feature slots.
PLACEHOLDERS: dict[str, int] = {"<video>": -200, "<image>": -201, "<audio>": -202}
# Media kind (a sample's field) -> the placeholder its items fill, and back.
PLACEHOLDER_OF: dict[str, str] = {"video": "<video>", "image": "<image>", "audio": "<audio>"}
KIND_OF_PLACEHOLDER: dict[str, str] = {ph: kind for kind, ph in PLACEHOLDER_OF.items()}
MEDIA_KINDS: tuple[str, ...] = tuple(PLACEHOLDER_OF)

IGNORE_INDEX = -100  # label of a token that is not supervised (cross-entropy's ignore_index)

# One media item as the model takes it: pixels / log-mels, or precomputed encoder features by branch.
Payload = Union["torch.Tensor", dict[str, "torch.Tensor"]]  # noqa: F821 (torch is not imported here)

# The Ego-Exo4D proficiency levels, lowest first (eval.labels default, converters, synthetic data).
PROFICIENCY_LEVELS: tuple[str, ...] = ("Novice", "Early Expert", "Intermediate Expert", "Late Expert")
