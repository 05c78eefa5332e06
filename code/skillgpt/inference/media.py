"""Media in replies (NExT-GPT's decoder side at inference): a reply's signal tokens become image, video and
audio files.

A model with ``model.generation`` asks for a modality by writing that modality's run of signal tokens
(``[IMG0]..[IMGk-1]``). Generation keeps such runs whole (`SignalRunProcessor`: once ``[IMG0]`` is chosen,
``[IMG1]..`` follow, and a later token of a run is never chosen on its own). After the reply,
`reply_conditioning` runs the LLM once over prompt + reply and takes the states at each run exactly as
training does (``skillgpt.generation.alignment.conditioning``: the chosen layers' states at the signal tokens
through their output projectors, with the signal tokens' input embeddings), and `MediaMaker` turns that
conditioning into files with the local diffusers pipelines of ``generation.decoders.<modality>.path``
(``skillgpt.generation.decoders``), each loaded once, on first use.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import torch
from torch import Tensor
from transformers import LogitsProcessor

from skillgpt.generation.alignment import conditioning
from skillgpt.generation.decoders import (
    PIPELINE_CLASSES, SUFFIXES, DecoderSettings, generate, load_decoder, write_output,
)
from skillgpt.inference.inputs import DECODER_FLAGS

if TYPE_CHECKING:
    from skillgpt.config.schema import GenerationRunConfig

NOUN = {"image": "an image", "video": "a video", "audio": "audio"}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class MediaFile:
    """One generated file: its modality (image | video | audio) and path."""

    modality: str
    path: Path


class SignalRunProcessor(LogitsProcessor):
    """Keeps each modality's signal tokens a whole run, as NExT-GPT's training data writes them: after token j
    of a run (but the last) only token j + 1 may follow, and tokens 1.. of a run are never chosen otherwise.
    The ids it sees are the generated ones (the prompt goes in as embeddings). A reply without signal tokens
    is unchanged under greedy decoding: only tokens that would have made it hold signal tokens are masked."""

    def __init__(self, signal_ids: Mapping[str, Sequence[int]]) -> None:
        self.next_of = {a: b for ids in signal_ids.values() for a, b in zip(ids, ids[1:])}
        self.later = torch.tensor([i for ids in signal_ids.values() for i in ids[1:]], dtype=torch.long)

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if not self.next_of:
            return scores
        scores = scores.clone()
        scores[:, self.later.to(scores.device)] = -float("inf")
        if input_ids.shape[1]:
            for row, last in enumerate(input_ids[:, -1].tolist()):
                forced = self.next_of.get(last)
                if forced is not None:
                    scores[row] = -float("inf")
                    scores[row, forced] = 0.0
        return scores


def signal_runs(ids: Sequence[int], run: Sequence[int], start: int = 0) -> tuple[list[int], int]:
    """(start positions >= `start` of the complete runs `run` in `ids`, count of runs cut short)."""
    k, found, cut = len(run), [], 0
    for p in range(start, len(ids)):
        if ids[p] == run[0]:
            if list(ids[p:p + k]) == list(run):
                found.append(p)
            else:
                cut += 1
    return found, cut


@torch.no_grad()
def reply_conditioning(model: Any, ids: Tensor, media: Optional[dict], reply_start: int) -> dict[str, Tensor]:
    """{modality: conditioning [runs, T, D]} of the complete signal-token runs in `ids` [1, L] from position
    `reply_start` on (the reply; earlier runs belong to the conversation so far). Empty, and no forward pass,
    when the reply has none. The states are those of one forward pass over prompt + reply, as in training."""
    head = model.generation
    row = ids[0].tolist()
    runs = {m: starts for m, run in head.signal_ids.items() if (starts := signal_runs(row, run, reply_start)[0])}
    if not runs:
        return {}
    embeds = model.embed(ids, media)
    out = model.causal_lm(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), use_cache=False,
                          output_hidden_states=True, logits_to_keep=1)
    result = {}
    for modality, starts in runs.items():
        n, k = len(starts), len(head.signal_ids[modality])
        positions = torch.tensor(starts, device=ids.device).unsqueeze(1) + torch.arange(k, device=ids.device)
        states = [h.expand(n, -1, -1) for h in out.hidden_states]
        result[modality] = conditioning(head.projectors[modality], states, head.layers,
                                        embeds.expand(n, -1, -1), positions)
    return result


def decoder_dtype(name: str, device: torch.device) -> torch.dtype:
    """`generation.dtype`: auto is float16 on CUDA (as NExT-GPT runs its decoders), float32 elsewhere."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


class MediaMaker:
    """The decoders of ``generation.decoders.*`` (each loaded on first use, then kept) and the files they
    write into ``generation.media_dir``. Safe to share between threads (the demo's concurrent requests)."""

    def __init__(self, cfg: "GenerationRunConfig", device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        self.media_dir = Path(cfg.media_dir).expanduser().absolute()
        self._pipes: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._running = {m: threading.Lock() for m in PIPELINE_CLASSES}  # a pipeline runs one call at a time

    def settings(self, modality: str) -> DecoderSettings:
        return DecoderSettings.from_config(modality, getattr(self.cfg.decoders, modality))

    def folder(self, modality: str) -> Path:
        """The decoder folder of `modality`; an error naming the config key and flag when it is not set or absent."""
        key = f"generation.decoders.{modality}.path"
        value = getattr(self.cfg.decoders, modality).path
        if not value:
            raise ValueError(f"the reply asks for {NOUN[modality]} but {key} is not set: point it at a local "
                             f"diffusers {PIPELINE_CLASSES[modality]} folder ({DECODER_FLAGS[modality]} PATH "
                             f"or --set {key}=PATH)")
        folder = Path(value).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"{key}: {folder}: decoder folder not found (expected a local diffusers "
                                    f"{PIPELINE_CLASSES[modality]} folder; {DECODER_FLAGS[modality]} PATH)")
        return folder

    def pipe(self, modality: str) -> Any:
        with self._lock:
            if modality not in self._pipes:
                folder = self.folder(modality)
                try:
                    pipe = load_decoder(folder, modality, decoder_dtype(self.cfg.dtype, self.device), self.device)
                except (OSError, ValueError) as err:
                    raise type(err)(f"generation.decoders.{modality}.path: {err}") from err
                pipe.set_progress_bar_config(disable=True)
                self._pipes[modality] = pipe
            return self._pipes[modality]

    def _reserve(self, prefix: str, modality: str) -> Path:
        """A new file stem in the media folder: <prefix>-<modality>, then -2, -3, ... (created empty at once,
        so concurrent requests never get the same name)."""
        self.media_dir.mkdir(parents=True, exist_ok=True)
        n = 1
        while True:
            stem = self.media_dir / (f"{prefix}-{modality}" + (f"-{n}" if n > 1 else ""))
            try:
                stem.with_name(stem.name + SUFFIXES[modality]).open("x").close()
                return stem
            except FileExistsError:
                n += 1

    def render(self, conds: Mapping[str, Tensor], prefix: str) -> list[MediaFile]:
        """Run each modality's decoder on its conditioning [runs, T, D]; one file per run, in run order. Every
        decoder needed is found (and loaded) before any runs."""
        pipes = {modality: self.pipe(modality) for modality in conds}
        files = []
        for modality, cond in conds.items():
            with self._running[modality]:  # its scheduler keeps per-call state
                outputs = generate(pipes[modality], modality, cond, self.settings(modality))
            for out in outputs:
                stem = self._reserve(prefix, modality)
                try:
                    files.append(MediaFile(modality, write_output(out, modality, stem)))
                except BaseException:
                    stem.with_name(stem.name + SUFFIXES[modality]).unlink(missing_ok=True)
                    raise
        return files


def check_media_request(model: Any, asked: Sequence[str]) -> None:
    """ValueError in one line when media settings were given (`asked`: the flags or keys) for a model that
    cannot produce media (no signal tokens: trained without model.generation)."""
    if asked and getattr(model, "generation", None) is None:
        raise ValueError(f"{', '.join(asked)}: this checkpoint cannot generate images, videos or audio: it has no "
                         "signal tokens (model.generation.image_tokens / video_tokens / audio_tokens are 0); "
                         "leave out the media settings")
