"""Pixel rules of a Hugging Face model folder: what its ``preprocessor_config.json`` asks for, resolved with the
defaults of the processor class it names (as transformers does), and refused, naming the file and the field,
where SkillGPT cannot honour it. A low module on purpose: the data pipeline (skillgpt.data.hf_preprocessing
applies the rules to frames), the encoders (their expected input) and the config loader (``processor: auto``)
all read it, and none of them depends on the others. Standard library only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

# data.video.processor: "auto" (the schema default) is resolved by the config loader to the Hugging Face
# encoder's folder or to null (ImageBind's reference preprocessing, data/video.py); left unresolved (a
# VideoConfig built directly) it means ImageBind's too.
AUTO = "auto"
# Part of the feature-cache signature with the resolved rules: change it when the arithmetic below changes.
HF_PREPROCESSING = "hf-processor-torchvision/1"
# Encoders (registry names) whose model folder carries the pixel rules; the config loader points
# data.video.processor at model.encoder.path for them.
PROCESSOR_ENCODERS = ("hf_image", "hf_video")

# Processor classes whose pipeline is resize -> centre crop -> rescale/normalise (their _preprocess).
SUPPORTED_PROCESSORS = ("CLIPImageProcessor", "SiglipImageProcessor", "VideoMAEImageProcessor",
                        "VideoMAEVideoProcessor", "TimesformerVideoProcessor")
# The class a folder without image_processor_type gets, by config.json model_type (AutoImageProcessor's
# choice where it has one; the vision-tower model types it lacks get their full model's).
DEFAULT_PROCESSOR = {"clip": "CLIPImageProcessor", "clip_vision_model": "CLIPImageProcessor",
                     "siglip": "SiglipImageProcessor", "siglip_vision_model": "SiglipImageProcessor",
                     "videomae": "VideoMAEImageProcessor", "timesformer": "VideoMAEImageProcessor"}
# Fields that change pixels and are honoured (some only at one value: checked in read_rules).
HONOURED = frozenset({"do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale",
                      "rescale_factor", "do_normalize", "image_mean", "image_std", "do_convert_rgb", "do_pad",
                      "do_sample_frames", "default_to_square", "use_square_size"})
# Fields without effect on the pixels of one RGB frame (class names, output formats, frame sampling that
# do_sample_frames: false switches off).
METADATA = frozenset({"image_processor_type", "video_processor_type", "feature_extractor_type", "processor_class",
                      "_processor_class", "input_data_format", "data_format", "return_tensors", "device",
                      "disable_grouping", "num_frames", "fps", "return_metadata", "video_metadata",
                      "_valid_processor_keys"})  # (the last: a list of names transformers 4.40-4.42 saved by mistake)
# PIL resample codes torchvision resizes uint8 tensors with (the processor's mapping).
RESAMPLE = {0: "NEAREST_EXACT", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC"}
# Resize backends: "torchvision" (a transformers processor) or "opencv" (cv2.resize, INTER_LINEAR, on uint8
# frames; pixels normalised in float64, then float32: InternVideo2's VideoTrainProcessor in VideoGPT+).
BACKENDS = ("torchvision", "opencv")


@dataclass(frozen=True)
class PixelRules:
    """The resolved pixel settings of one preprocessor_config.json (``source``, not compared)."""

    processor: str  # transformers class the settings were resolved with
    do_resize: bool
    shortest_edge: Optional[int]
    longest_edge: Optional[int]
    height: Optional[int]  # fixed-size resize (height and width), when shortest_edge is None
    width: Optional[int]
    resample: int  # PIL code
    do_center_crop: bool
    crop: Optional[tuple[int, int]]  # (height, width)
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = field(default="", compare=False)
    backend: str = "torchvision"

    def signature(self) -> dict[str, Any]:
        """JSON-able settings for the feature cache (the source path excluded)."""
        settings = {k: v for k, v in self.__dict__.items() if k not in ("source", "backend")}
        if self.backend != "torchvision":  # signatures of the Hugging Face rules stay as they were
            settings["backend"] = self.backend
        return settings | {"arithmetic": HF_PREPROCESSING}

    def affine(self) -> tuple[list[float], list[float]]:
        """Per-channel (scale, offset) with pixel = uint8 value * scale + offset."""
        factor = self.rescale_factor if self.do_rescale else 1.0
        if not self.do_normalize:
            return [factor] * 3, [0.0] * 3
        return [factor / s for s in self.std], [-m / s for m, s in zip(self.mean, self.std)]

    def output_size(self) -> Optional[tuple[int, int]]:
        """(height, width) of every processed frame, None when it depends on the input's shape."""
        if self.do_center_crop:
            return self.crop
        return (self.height, self.width) if self.do_resize and self.shortest_edge is None else None


def _problem(file: Path, name: str, why: str) -> ValueError:
    return ValueError(f"{file}: field '{name}' {why}")


def _processor_name(file: Path, raw: dict[str, Any], folder: Path) -> str:
    """The processor class the folder's settings are read with: its own declaration, else by model_type."""
    for key in ("image_processor_type", "video_processor_type", "feature_extractor_type"):
        if raw.get(key):
            name = str(raw[key]).replace("FeatureExtractor", "ImageProcessor").removesuffix("Fast")
            if name not in SUPPORTED_PROCESSORS:
                raise _problem(file, key, f"is {raw[key]!r}; SkillGPT follows only {', '.join(SUPPORTED_PROCESSORS)} "
                                          "(resize, centre crop, rescale, normalise)")
            return name
    config = folder / "config.json"
    model_type = json.loads(config.read_text()).get("model_type") if config.is_file() else None
    if model_type not in DEFAULT_PROCESSOR:
        raise _problem(file, "image_processor_type", f"is missing and {config} has model_type {model_type!r}; "
                                                     f"name one of {', '.join(SUPPORTED_PROCESSORS)}")
    return DEFAULT_PROCESSOR[model_type]


def _per_channel(file: Path, name: str, values: Any) -> tuple[float, ...]:
    values = [values] * 3 if isinstance(values, (int, float)) else list(values)
    if len(values) != 3:
        raise _problem(file, name, f"must have 3 values (RGB), got {values}")
    return tuple(float(v) for v in values)


def read_rules(folder: str | Path) -> PixelRules:
    """The pixel rules of ``folder/preprocessor_config.json`` as its transformers processor resolves them.

    FileNotFoundError without the file; ValueError naming the file and the field for anything SkillGPT
    cannot honour (an unknown field, another processor class, padding, frame sampling by the processor,
    a resize or crop that leaves frames without one fixed size, an unsupported filter)."""
    import transformers

    folder = Path(folder).expanduser()
    file = folder / "preprocessor_config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: not found (data.video.processor needs the model's preprocessor_config.json; "
                                "set data.video.processor: null for ImageBind's preprocessing)")
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{file}: expected a JSON object of processor settings")
    unknown = sorted(set(raw) - HONOURED - METADATA)
    if unknown:
        raise _problem(file, unknown[0], "is not one SkillGPT knows how to honour (it follows "
                                         f"{', '.join(sorted(HONOURED - {'do_pad', 'do_sample_frames'}))})")
    name = _processor_name(file, raw, folder)
    settings = {k: v for k, v in raw.items() if k in HONOURED}
    try:
        proc = getattr(transformers, name)(**settings)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{file}: {name} rejects these settings: {err}") from err
    for flag in ("do_pad", "do_sample_frames"):
        if getattr(proc, flag, None):
            raise _problem(file, flag, "is true; SkillGPT samples frames itself (data.video) and never pads")
    size, crop = proc.size, proc.crop_size
    if proc.do_resize and not (size.shortest_edge or (size.height and size.width)):
        raise _problem(file, "size", f"resolves to {dict(size)}; SkillGPT follows shortest_edge (optionally with "
                                     "longest_edge) or height and width")
    resample = int(proc.resample)
    if proc.do_resize and resample not in RESAMPLE:
        raise _problem(file, "resample", f"is {resample}; SkillGPT resizes with {sorted(RESAMPLE)} "
                                         "(0 nearest, 1 lanczos, 2 bilinear, 3 bicubic)")
    if proc.do_center_crop and not (crop and crop.height and crop.width):
        raise _problem(file, "crop_size", f"resolves to {crop}; expected height and width")
    rules = PixelRules(
        processor=name, do_resize=bool(proc.do_resize),
        shortest_edge=size.shortest_edge if proc.do_resize else None,
        longest_edge=size.longest_edge if proc.do_resize else None,
        height=size.height if proc.do_resize and not size.shortest_edge else None,
        width=size.width if proc.do_resize and not size.shortest_edge else None,
        resample=resample, do_center_crop=bool(proc.do_center_crop),
        crop=(int(crop.height), int(crop.width)) if proc.do_center_crop else None,
        do_rescale=bool(proc.do_rescale), rescale_factor=float(proc.rescale_factor),
        do_normalize=bool(proc.do_normalize),
        mean=_per_channel(file, "image_mean", proc.image_mean), std=_per_channel(file, "image_std", proc.image_std),
        source=str(file),
    )
    if rules.output_size() is None:
        raise _problem(file, "do_center_crop", "is false while the resize keeps the aspect ratio; frames would have "
                                               "no fixed size (SkillGPT needs one: a crop_size or a height/width size)")
    return rules


# Named pixel rules of encoders whose original code has its own preprocessing rather than a transformers
# processor folder: ``data.video.processor: <name>`` (a name here wins over a folder of the same name).
BUILTIN_RULES: dict[str, PixelRules] = {
    # VideoGPT+'s InternVideo2 VideoTrainProcessor (videogpt_plus/model/internvideo/utils.py): cv2.resize of
    # each RGB frame to 224 x 224 (INTER_LINEAR, aspect not kept, no crop), /255, ImageNet mean and std.
    "internvideo2": PixelRules(
        processor="InternVideo2VideoTrainProcessor", do_resize=True, shortest_edge=None, longest_edge=None,
        height=224, width=224, resample=2, do_center_crop=False, crop=None, do_rescale=True,
        rescale_factor=1 / 255, do_normalize=True, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        source="built-in internvideo2", backend="opencv"),
}
# Encoders (registry names) whose pixel rules are built in; ``processor: auto`` resolves to their entry.
BUILTIN_ENCODER_RULES = {"internvideo2": "internvideo2"}


def processor_rules(processor: Optional[str]) -> Optional[PixelRules]:
    """``data.video.processor`` -> its rules; None for ImageBind's reference preprocessing (null, auto)."""
    if processor is None or processor == AUTO:
        return None
    if processor in BUILTIN_RULES:
        return BUILTIN_RULES[processor]
    return read_rules(processor)
