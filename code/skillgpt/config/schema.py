"""Typed configuration schema. Every YAML file and `key=value` override is checked against it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from skillgpt.constants import PROFICIENCY_LEVELS  # re-exported: the old import path

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass
class VideoConfig:
    """How a video file becomes a clip tensor [num_clips * num_crops, C, frames_per_clip, H, W]."""

    num_clips: int = 5  # clips spread evenly over the video (reference: 5)
    clip_duration: float = 2.0  # seconds per clip (reference: 2 s)
    frames_per_clip: int = 2  # frames sampled uniformly inside a clip (reference: 2)
    resolution: int = 224  # short side resized to this, then square crops of this size
    num_crops: int = 1  # 1 = centre crop; 3 = left/centre/right as the reference does
    mean: list[float] = field(default_factory=lambda: list(CLIP_MEAN))
    std: list[float] = field(default_factory=lambda: list(CLIP_STD))
    # Pixel rules of videos and images: null = ImageBind's reference preprocessing (resolution, mean and
    # std above); a Hugging Face model folder = its preprocessor_config.json, as its transformers processor
    # (resolution/mean/std unused; data/hf_preprocessing.py); auto: the config loader picks
    # model.encoder.path for hf_image / hf_video encoders whose folder has that file, else null.
    processor: Optional[str] = "auto"
    # Which frames: "clips" = num_clips clips of clip_duration seconds, frames_per_clip each (ImageBind's
    # reference sampler, above); "videogpt_plus" = VideoGPT+'s loader (data/videogpt_sampling.py): the video
    # walked at sample_fps, thinned to max_frames / re-spaced to min_frames, num_clips * frames_per_clip of
    # those frames in order (zero frames pad a short video); clip_duration unused
    sampling: str = "clips"
    sample_fps: float = 1.0
    max_frames: int = 16
    min_frames: int = 8


@dataclass
class AudioConfig:
    """How an audio file (or a video's audio track) becomes log-mel clips [num_clips, 1, mel, frames]."""

    sample_rate: int = 16000
    num_mel_bins: int = 128
    target_length: int = 204  # fbank frames per clip (padded or cropped)
    clip_duration: float = 2.0
    num_clips: int = 3
    mean: float = -4.268
    std: float = 9.138


@dataclass
class EncoderConfig:
    """Frozen visual encoder. `name` picks the builder from the encoder registry."""

    name: str = "imagebind"  # registry key (skillgpt.models.encoders.ENCODERS)
    checkpoint: Optional[str] = None  # local imagebind_huge.pth / .safetensors; None = seeded random init
    path: Optional[str] = None  # Hugging Face encoders: local folder for from_pretrained
    select_layer: int = -2  # Hugging Face encoders: which hidden layer's tokens (LLaVA uses -2)
    init_seed: int = 0
    mean: Optional[list[float]] = None  # Hugging Face encoders: pixel mean (default: preprocessor_config.json)
    std: Optional[list[float]] = None
    temporal_pool: bool = False  # hf_video: average the temporal slices of each clip
    # Random init only (checkpoint: null): how the video stem's two temporal taps relate.
    # "independent" draws both; "difference" sets tap 2 = -tap 1, so every patch channel sees the
    # change between the two frames of a clip (a random encoder that is not motion-blind).
    init_video_stem: str = "independent"
    image_size: int = 224
    patch_size: int = 14
    frames: int = 2  # temporal kernel of the video stem
    vision_width: int = 1280
    vision_layers: int = 32
    vision_heads: int = 16
    audio_width: int = 768
    audio_layers: int = 12
    audio_heads: int = 12
    audio_mel_bins: int = 128
    audio_target_len: int = 204
    audio_kernel_size: int = 16
    audio_stride: int = 10
    out_dim: int = 1024
    # What the LLM sees: "pooled" (one normalised embedding per video, PandaGPT),
    # "clip_embeddings" (one head embedding per clip) or "clip_tokens" (trunk tokens per clip).
    output: str = "clip_tokens"
    keep_cls: bool = True  # clip_tokens: keep the class token of each clip
    pool: int = 1  # clip_tokens: a g x g patch grid becomes round(g/pool) x round(g/pool)
    normalize_tokens: bool = True  # clip_tokens: apply the head's final LayerNorm
    # eva_clip (MiniGPT-4/v2; checkpoint: eva_vit_g.pth, vision_layers/vision_heads/image_size as ViT-g's):
    qformer: Optional[str] = None  # local BLIP-2 checkpoint (Q-Former, query_tokens, ln_vision); null: none
    qformer_heads: int = 12  # Q-Former attention heads (BERT-base)
    merge_tokens: int = 1  # without a Q-Former: this many consecutive patch tokens concatenated (MiniGPT-v2: 4)
    # Weights and compute dtype of this frozen encoder in training (whatever train.precision), eval,
    # inference and the feature cache: float32 | bfloat16 | float16. Its output is cast to the projector's.
    dtype: str = "float32"


@dataclass
class ProjectorConfig:
    name: str = "linear"  # registry key (skillgpt.models.projectors.PROJECTORS)
    pool: int = 2  # pool: a g x g grid per group becomes round(g/pool) x round(g/pool) (at least 1)
    num_queries: int = 8  # resampler: learned queries = output tokens per group (clip)
    num_prototypes: int = 8  # prototype: learned prototypes = output tokens per video
    heads: int = 4  # attention heads of resampler / view_fusion
    layers: int = 1  # cross-attention layers of resampler / view_fusion
    pool_after_mlp: bool = False  # pool: project every token, then pool (VideoGPT+'s order); false: pool first


@dataclass
class ContextConfig:
    """VideoGPT+ dual encoder: a per-frame image encoder on a few context frames, with its own projector."""

    enabled: bool = False
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(name="hf_image", keep_cls=False))
    projector: ProjectorConfig = field(default_factory=lambda: ProjectorConfig(name="pool"))
    frames: int = 4  # frames picked evenly over the video's sampled frames
    position: str = "before"  # before | after: context tokens relative to the video encoder's tokens


@dataclass
class AudioModelConfig:
    """ImageBind's audio branch (same checkpoint as model.encoder, which must be imagebind)."""

    enabled: bool = False
    output: str = "clip_embeddings"  # pooled | clip_embeddings | clip_tokens
    keep_cls: bool = True
    normalize_tokens: bool = True
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class LLMConfig:
    path: str = MISSING  # local folder with config.json, weights and tokenizer
    dtype: str = "float32"  # float32 | bfloat16 | float16
    attn_implementation: str = "auto"  # auto (FlashAttention 2 where it can run, else SDPA) | sdpa | eager | ...
    template: str = "vicuna_v0"  # conversation template name (skillgpt.data.templates)
    # system prompt for conversations without a system turn; null: the template's own ("" = none)
    system_prompt: Optional[str] = None
    max_length: int = 512  # tokens per sample including visual tokens
    lora: LoraConfig = field(default_factory=LoraConfig)
    # Low-resource mode: null (as stored) | 8bit | 4bit (NF4, QLoRA-style). Needs a CUDA GPU and bitsandbytes.
    quantization: Optional[str] = None


@dataclass
class GenerationConfig:
    """NExT-GPT's decoder side (docs/generation.md): signal tokens and output projectors; off with no tokens."""

    image_tokens: int = 0  # [IMG0..n-1] (NExT-GPT: 4)
    video_tokens: int = 0  # [VID0..n-1] (NExT-GPT: 24)
    audio_tokens: int = 0  # [AUD0..n-1] (NExT-GPT: 8)
    projector: str = "transformer"  # output projector kind: linear | transformer (NExT-GPT's TextFcLayer modes)
    hidden_dim: int = 512  # transformer projector width, heads and layers (NExT-GPT's values)
    heads: int = 4
    encoder_layers: int = 4
    decoder_layers: int = 4
    llm_layers: list[int] = field(default_factory=lambda: [-1])  # hidden-state indices, one projector each
    image_shape: list[int] = field(default_factory=lambda: [77, 768])  # decoder conditioning [tokens, width]
    video_shape: list[int] = field(default_factory=lambda: [77, 1024])
    audio_shape: list[int] = field(default_factory=lambda: [1, 512])

    def counts(self) -> dict[str, int]:
        return {"image": self.image_tokens, "video": self.video_tokens, "audio": self.audio_tokens}


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    audio: AudioModelConfig = field(default_factory=AudioModelConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class FreezeConfig:
    """Per-stage policy for each part: frozen | lora | full (lora only applies to the llm)."""

    encoder: str = "frozen"
    projector: str = "full"
    llm: str = "frozen"
    generation: str = "frozen"  # signal-token rows + output projectors (model.generation)


@dataclass
class AugmentConfig:
    """Training-only augmentation, seeded by (train.seed, epoch, sample); never applied in eval."""

    enabled: bool = False
    temporal_jitter: float = 0.0  # each clip start moves by up to +-this fraction of clip_duration
    crop_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # random resized crop area range
    hflip_scenarios: list[str] = field(default_factory=list)  # scenarios that may be mirrored ("*" = all)


@dataclass
class DataConfig:
    train: Optional[str] = MISSING  # JSON file of samples (may be left out when data.mixture is set)
    val: Optional[str] = None
    test: Optional[str] = None
    format: str = "conversation"  # conversation | caption
    media_root: Optional[str] = None  # relative media paths resolve here (default: the JSON's folder)
    caption_prompts: list[str] = field(
        default_factory=lambda: ["<video> Describe this video.", "<video> What happens in this clip?"]
    )
    num_workers: int = 0
    prefetch_factor: int = 2  # batches each DataLoader worker prepares ahead (num_workers > 0)
    cache_videos: bool = False  # keep decoded clips in memory after the first epoch (small datasets)
    video: VideoConfig = field(default_factory=VideoConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    # Multi-view samples ("video": {"ego": ..., "exo1": ...}): the views used, in this order ([] = single view).
    views: list[str] = field(default_factory=list)
    view_mode: str = "fuse"  # fuse: one <video>, views fused by the projector | separate: one <video> per view
    feature_cache: Optional[str] = None  # folder of `skillgpt cache-features`; null = encode online
    feature_cache_mode: str = "auto"  # auto: use when complete, else encode online | require: refuse otherwise
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    on_bad_sample: str = "error"  # error: stop before training with a report | skip: drop, count, list
    probe_media: bool = True  # decode every media file when the dataset is built (bad files fail early)
    group_by_length: bool = False  # batches of similar length (and the same media kinds) within mega-batches
    catalog: Optional[str] = None  # YAML file naming datasets (e.g. config/datasets.yaml)
    mixture: dict[str, float] = field(default_factory=dict)  # catalog name -> per-epoch weight (replaces train)
    # NExT-GPT stage 2: modality -> folder of `skillgpt cache-caption-embeddings`; samples with a
    # "generate": {"modality": ..., "caption": ...} field get that caption's embedding as alignment target
    caption_cache: dict[str, str] = field(default_factory=dict)


@dataclass
class ParentConfig:
    """The checkpoint a run started from, recorded when the run starts (skillgpt.checkpoint.lineage)."""

    manifest_sha256: Optional[str] = None  # SHA-256 of its MANIFEST.json: loading refuses a changed parent
    parts: list[str] = field(default_factory=list)  # what it put into the model: projector | adapter | llm


@dataclass
class TrainConfig:
    output_dir: str = MISSING
    # previous stage: a checkpoint folder, or a run folder (its newest checkpoint, resolved once when the
    # run starts and recorded as that checkpoint-N folder with train.parent)
    init_from: Optional[str] = None
    parent: ParentConfig = field(default_factory=ParentConfig)  # recorded, not set by hand
    deepspeed_config: str = "dsconfig/stage_1.json"
    epochs: int = 1
    max_steps: int = -1  # optimizer steps; -1 = run all epochs
    micro_batch_size: int = 4
    grad_accum: int = 1
    global_batch_size: Optional[int] = None  # set: grad_accum = global / (micro_batch_size x processes), checked
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    precision: str = "auto"  # auto (bf16 where the hardware has it) | fp32 | bf16
    seed: int = 42
    save_every: int = 0  # optimizer steps between checkpoints; 0 = end of every epoch only
    keep_last: int = 2
    keep_best: Optional[str] = None  # "val_loss": also keep the checkpoint with the lowest loss on data.val
    resume: bool = True
    allow_config_change: bool = False  # resume even when settings that change the run differ
    max_nonfinite: int = 5  # optimizer steps in a row skipped for a non-finite loss/gradient before the run stops
    activation_checkpointing: bool = False  # recompute decoder layers in backward: less memory, ~30% more compute
    compile: bool = False  # torch.compile each LLM decoder layer and the encoders (first steps pay the compile)
    compile_backend: str = "inductor"  # torch.compile backend (inductor; aot_eager / eager for debugging)
    # Where metrics go besides metrics.jsonl: tensorboard (<run>/tensorboard) | wandb (<run>/wandb, offline
    # unless WANDB_MODE says otherwise); [] = metrics.jsonl (and loss.png) only. skillgpt.train.reporting
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    # optimizer steps between validations on data.val (loss, and label top-1 for proficiency data), also
    # at the last step; 0 = none (train.keep_best still validates at each save)
    eval_every: int = 0


@dataclass
class EvalConfig:
    split: str = "test"  # data.<split> is evaluated
    labels: list[str] = field(default_factory=lambda: list(PROFICIENCY_LEVELS))
    # the prompt of samples without conversations; a sample with one is scored with its first human turn
    # (skillgpt.data.prompt); placeholders follow the media given (a <video> without video is dropped)
    question: str = "<video> What is the proficiency level of this athlete?"
    max_new_tokens: int = 32
    batch_size: int = 8
    # proficiency (rank eval.labels) | multiple_choice (rank each sample's candidates) |
    # score (AQA: number in the generated answer, Spearman rho) | feedback (last reply, BLEU-4/chrF) |
    # generation (NExT-GPT decoder side: alignment l2 and caption retrieval top-1 per modality, eval/generation.py)
    task: str = "proficiency"
    # multiple_choice: an option's score is its answer tokens' log-probs summed (sum) or averaged per token
    # (mean, length-normalised: a sum favours shorter options whatever they say). Stated in the results.
    option_scoring: str = "mean"
    self_questions: int = 0  # proficiency: first let the model ask and answer N questions (vicuna_v1_sq)
    # Ego-Exo4D protocol for a single-view model on multi-view samples: score each of `views` alone,
    # then late-fuse by averaging the views' softmaxes per group (e.g. Exo: [exo1..exo4],
    # Ego+Exo: [ego, exo1..exo4]). The first group (else the first view) gives the reported prediction.
    views: list[str] = field(default_factory=list)
    view_groups: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class DecoderRunConfig:
    """One diffusion decoder at inference (skillgpt.generation.decoders): where it is and how it runs."""

    path: Optional[str] = None  # local diffusers pipeline folder (null: this modality cannot be generated)
    steps: int = 50  # denoising steps (NExT-GPT's inference defaults below)
    guidance: float = 7.5  # classifier-free guidance scale; <= 1 turns guidance off
    seed: Optional[int] = 0  # noise seed (a CPU generator: the same noise on every device); null = unseeded
    negative: str = "empty"  # guidance's unconditional branch: empty (the empty prompt) | zeros


@dataclass
class ImageDecoderConfig(DecoderRunConfig):
    height: Optional[int] = 512  # pixels, multiples of 8 (null: the UNet's native size)
    width: Optional[int] = 512


@dataclass
class VideoDecoderConfig(DecoderRunConfig):
    height: Optional[int] = 320
    width: Optional[int] = 576
    num_frames: int = 24
    fps: int = 8  # frame rate written to the .mp4


@dataclass
class AudioDecoderConfig(DecoderRunConfig):
    length_s: float = 9.0  # seconds of audio


@dataclass
class DecodersConfig:
    image: ImageDecoderConfig = field(default_factory=ImageDecoderConfig)  # Stable Diffusion 1.x
    video: VideoDecoderConfig = field(default_factory=VideoDecoderConfig)  # text-to-video (ZeroScope)
    audio: AudioDecoderConfig = field(default_factory=AudioDecoderConfig)  # AudioLDM


@dataclass
class GenerationRunConfig:
    """Media generation at inference (infer / chat / demo) for models with model.generation: a reply's signal
    tokens go through the output projectors to these decoders (docs/generation-decoders.md)."""

    media_dir: str = "skillgpt-media"  # where infer / chat write the files (relative: the working directory)
    dtype: str = "auto"  # decoders' dtype: auto (float16 on CUDA, else float32) | float32 | float16 | bfloat16
    decoders: DecodersConfig = field(default_factory=DecodersConfig)


@dataclass
class Config:
    run_name: str = "run"
    stage: int = 1
    preset: str = MISSING  # model preset file in config/model/<preset>.yaml
    model: ModelConfig = field(default_factory=ModelConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generation: GenerationRunConfig = field(default_factory=GenerationRunConfig)
