"""The ``medclip`` argument parser: each command's options, flags as sugar for config keys, choices from registries."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from typing import Any

from medclip.cli import commands
from medclip.cli.commands import CFG
from medclip.config import (
    CALIBRATIONS,
    EVAL_MODES,
    EVAL_SPLITS,
    INDEX_COMPRESSIONS,
    INDEX_KINDS,
    BenchCfg,
    DemoCfg,
    EvalCfg,
    GroundCfg,
    IndexBuildCfg,
    IndexQueryCfg,
    ManifestCfg,
    ServeCfg,
    default_of,
)
from medclip.executors import EXECUTORS

EXAMPLES = {
    "demo": "medclip demo --out runs/demo",
    "synth": "medclip synth cxr data/demo_archive --studies 200 --seed 0",
    "manifest": "medclip manifest data/demo_archive --layout dicom --out data/demo_manifest --salt MY_SITE_SECRET\n  "
    "medclip manifest dicomweb+http://pacs:8042/dicom-web --reports ris/oru/ --since 2024-01-01 --out data/pacs\n  "
    "medclip manifest dimse://ORTHANC@pacs:4242 --reports fhir_export.ndjson --modalities CR,DX --out data/pacs",
    "train": "medclip train demo_cxr data.manifest=data/demo_manifest train.out_dir=runs/cxr train.epochs=5",
    "eval": "medclip eval zeroshot --checkpoint runs/cxr/final --manifest data/demo_manifest "
    "--labels data/demo_archive/labels.csv --out runs/cxr/eval\n  "
    "medclip eval probe --checkpoint runs/cxr/final --csv my_images.csv --image-col path --out runs/cxr/probe\n  "
    "medclip eval grounding --checkpoint runs/cxr/final --csv MS_CXR_Local_Alignment.csv --out runs/cxr/grounding",
    "index": "medclip index build --checkpoint runs/cxr/final --manifest data/demo_manifest --out runs/cxr/index\n  "
    'medclip index query runs/cxr/index "small left apical pneumothorax" -k 10',
    "ground": 'medclip ground --checkpoint runs/demo/train/final study.dcm "left pleural effusion" --out runs/ground',
    "sections": "medclip sections report.txt",
    "label": "medclip label reports.csv --out labels.csv --labels chexpert --sections impression,findings",
    "prepare": "medclip prepare data/demo_manifest --out data/demo_shards --image-size 224 --workers 8",
    "serve": "medclip serve --checkpoint runs/demo/train/final --index runs/demo/index --port 8000",
    "bench": "medclip bench chexpert-5x200 --data ~/data/CheXpert-v1.0-small --checkpoint runs/cxr/final "
    "--out runs/cxr/bench_5x200\n  "
    "medclip bench rsna-pneumonia --data ~/data/rsna --checkpoint runs/cxr/final --operating-point sensitivity:0.95 "
    "--prevalence 0.01\n  "
    "medclip bench --list",
}


class RegistryChoices:
    """argparse ``choices`` read from a registry only when argparse checks a value or prints help.

    Keeps ``medclip sections`` from importing torch just to build the parser.
    """

    def __init__(self, names: Callable[[], list[str]], *extra: str) -> None:
        self._names, self._extra = names, extra

    def _all(self) -> list[str]:
        return [*self._names(), *self._extra]

    def __contains__(self, value: object) -> bool:
        return value in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())


def _registry_option(p: argparse.ArgumentParser, *flags: str, names: RegistryChoices, metavar: str, help: str,
                     **kwargs: Any) -> None:  # fmt: skip
    """An option (with ``key=``) or a positional whose choices come from a registry, listed in --help when asked."""
    text = f"{help}: %(choices)s"
    if "key" in kwargs:
        _option(p, *flags, choices=names, metavar=metavar, help=text, **kwargs)
    else:
        p.add_argument(*flags, choices=names, metavar=metavar, help=text, **kwargs)


def _layouts() -> list[str]:
    from medclip.ingest.layouts import LAYOUTS

    return LAYOUTS.list()


def _eval_tasks() -> list[str]:
    from medclip.eval.pipeline import EVAL_TASKS

    return list(EVAL_TASKS)


def _demos() -> list[str]:
    from medclip.demo import DEMOS

    return DEMOS.list()


def _label_sets() -> list[str]:
    from medclip.reports.label_rules import LABEL_SETS

    return list(LABEL_SETS)


def _comma_list(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _option(p: argparse.ArgumentParser, *flags: str, key: str, schema: type, help: str, **kwargs: Any) -> None:
    """A flag that sets config ``key``; its default (shown in --help) is the schema's, declared nowhere else."""
    default = default_of(schema, key)
    explained = "default" in help or "(0" in help  # the help says what the default (or a 0 sentinel) means
    shown = "" if "const" in kwargs or explained or default in ("", [], None) else f" (default: {default})"
    if "const" not in kwargs:
        kwargs.setdefault("metavar", flags[-1].lstrip("-").upper().replace("-", "_"))
    p.add_argument(*flags, dest=CFG + key, default=argparse.SUPPRESS, help=help + shown, **kwargs)


def _parser_kwargs(name: str, help_text: str) -> dict:
    return {
        "help": help_text,
        "description": help_text,
        "epilog": f"example:\n  {EXAMPLES[name]}",
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


def _config_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--config", default=None, help=f"a YAML file of {what} keys (flags and key=value override it)")
    p.add_argument("overrides", nargs="*", default=[], help="dotted key=value overrides of the same keys")


def _source_args(p: argparse.ArgumentParser, schema: type) -> None:
    _option(p, "--manifest", key="manifest", schema=schema, help="manifest directory (a `medclip manifest` output)")
    _option(p, "--csv", key="csv", schema=schema, help="CSV with an image-path column, optional text, 0/1/-1 labels")
    _option(p, "--image-col", key="image_col", schema=schema, help="image-path column of --csv (default: image_path, "
            "path, image, ...)")  # fmt: skip
    _option(
        p, "--text-col", key="text_col", schema=schema, help="report-text column of --csv (default: text, report, ...)"
    )
    _option(p, "--shards", key="shards", schema=schema, help="prepared images of --manifest (`medclip prepare`) "
            "to read instead of files")  # fmt: skip
    _option(p, "--checkpoint", key="checkpoint", schema=schema, help="a run's final/ directory, or its URL (s3://...)")
    _option(p, "--batch-size", key="batch_size", schema=schema, type=int, help="images per forward pass")
    _option(p, "--device", key="device", schema=schema, help="cpu, cuda, cuda:N")


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in _comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def _screening_args(p: argparse.ArgumentParser, schema: type) -> None:
    _option(p, "--operating-point", key="operating_point", schema=schema,
            help="threshold rule on the validation split: youden, sensitivity:0.95 or specificity:0.9")  # fmt: skip
    _option(p, "--prevalence", key="prevalence", schema=schema, type=_float_list,
            help="comma-separated prevalences to also report PPV / NPV at (e.g. 0.01,0.05)")  # fmt: skip
    _option(p, "--calibration", key="calibration", schema=schema, choices=CALIBRATIONS,
            help="score -> probability map fitted on validation")  # fmt: skip
    _option(p, "--subgroups", key="subgroups", schema=schema, type=_comma_list,
            help="comma-separated subgroup columns (default: sex,age_band,view,manufacturer,site, where present)")  # fmt: skip
    _option(p, "--min-group", key="min_group", schema=schema, type=int,
            help="fewest positives and negatives a subgroup needs to be judged")  # fmt: skip


def _overlap_option(p: argparse.ArgumentParser, schema: type) -> None:
    _option(p, "--allow-overlap", key="allow_overlap", schema=schema, action="store_const", const=True,
            help="go on when the split holds patients or studies the checkpoint trained on (counts are recorded)")  # fmt: skip


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", **_parser_kwargs("demo", "synthesise an archive, build a manifest, train, evaluate"))
    _registry_option(
        p,
        "--modality",
        key="modality",
        schema=DemoCfg,
        names=RegistryChoices(_demos),
        metavar="NAME",
        help="which demo",
    )
    _option(p, "--out", key="out_dir", schema=DemoCfg, help="run directory (default runs/demo, runs/demo_<modality>)")
    _option(p, "--studies", key="studies", schema=DemoCfg, type=int, help="studies (sketches) in the synthetic "
            "archive (default: 2000 CXR studies, 1500 CT studies, 1000 sketches)")  # fmt: skip
    _option(p, "--seed", key="seed", schema=DemoCfg, type=int, help="synthesis and training seed")
    p.add_argument("overrides", nargs="*", default=[], help="training-config overrides key=value (e.g. "
                   "train.epochs=3); demo.KEY=VALUE sets the demo's own keys")  # fmt: skip
    p.set_defaults(func=commands.cmd_demo)


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", **_parser_kwargs("synth", "write a synthetic hospital archive (DICOM + reports)"))
    _registry_option(p, "modality", names=RegistryChoices(_demos), metavar="MODALITY", help="which archive")
    p.add_argument("out_dir")
    p.add_argument("--studies", "--n", dest="studies", type=int, default=400, help="studies (sketches for sketch)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=commands.cmd_synth)


def _add_manifest(sub) -> None:
    s = ManifestCfg
    p = sub.add_parser("manifest", **_parser_kwargs("manifest", "scan an archive into manifest.parquet + rejects"))
    p.add_argument("archive", nargs="?", help="the archive folder, the CSV of --layout csv, or a PACS: "
                   "dicomweb+http(s)://HOST:PORT/PATH or dimse://AE_TITLE@HOST:PORT (or source=...)")  # fmt: skip
    _registry_option(p, "--layout", key="layout", schema=s, names=RegistryChoices(_layouts), metavar="LAYOUT",
                     help="dicom: DICOM tree + <accession>.txt; dicom-ct: one row per CT series or NIfTI volume; "
            "mimic-cxr-jpg: files/pNN/p*/s*/; openi: XML + PNG; csv: ARCHIVE is a CSV of image paths, "
            "patient, study and report")  # fmt: skip
    _option(p, "--modalities", key="modalities", schema=s, type=_comma_list, help="comma-separated modalities to "
            "keep (default CR,DX,DR; CT for dicom-ct; all: every one); others are rejected with reason 'modality'")  # fmt: skip
    _option(p, "--reports", key="reports", schema=s, help="report table (CSV/JSONL: study key + text), a folder of "
            "<key>.txt files, DICOM SR files, HL7 v2 ORU messages, or FHIR DiagnosticReport JSON/NDJSON")  # fmt: skip
    _option(p, "--column", key="columns", schema=s, action="append", metavar="ROLE=COLUMN",
            help="csv layout: name a column (roles: image, report_text, report_path, patient, study, view, "
            "modality, sex, age, manufacturer, site); repeat for several image columns; the rest is auto-detected")  # fmt: skip
    _option(p, "--out", key="out_dir", schema=s, help="output folder (or URL: s3://bucket/manifest)")
    _option(p, "--salt", key="salt", schema=s, help="secret salt for patient-key hashes (default: --salt-file, env "
            "MEDCLIP_PATIENT_SALT, else OUT/.medclip_salt, made once and reused by every rebuild into OUT)")  # fmt: skip
    _option(p, "--salt-file", key="salt_file", schema=s, metavar="PATH", help="read the secret salt from this file (created with a "
            "random salt if absent); several output folders can share one")  # fmt: skip
    _option(p, "--splits", key="splits", schema=s, metavar="FILE", help="split table CSV[.gz] with a split column and a patient "
            "and/or study column (e.g. mimic-cxr-2.0.0-split.csv.gz); unlisted patients get the hash split")  # fmt: skip
    _option(p, "--reshuffle", key="reshuffle", schema=s, action="store_const", const=True,
            help="re-split from scratch: accept a salt other than OUT's manifest's and drop its pinned splits")  # fmt: skip
    _option(p, "--text-policy", key="text_policy", schema=s, help="which report text pairs with an image")
    _option(p, "--no-verify", key="verify_pixels", schema=s, action="store_const", const=False,
            help="skip decoding every image once while scanning")  # fmt: skip
    scale = p.add_argument_group("where the scan runs (docs/scale.md); the manifest does not depend on it")
    _option(scale, "--executor", key="executor", schema=s, choices=EXECUTORS, help="local: processes on this "
            "machine; dask: a Dask cluster (--scheduler, else a LocalCluster of --processes workers)")  # fmt: skip
    _option(scale, "--scheduler", key="scheduler", schema=s, metavar="tcp://HOST:8786",
            help="dask: the address of a running Dask scheduler")  # fmt: skip
    _option(scale, "--processes", key="processes", schema=s, type=int, metavar="N",
            help="local processes, or LocalCluster workers (default 0: every core)")  # fmt: skip
    _option(p, "--deid", key="deid", schema=s, action="store_const", const="on", help="de-identify: salted keys for "
            "every id, report text scrubbed of names, ids, dates, phones and addresses (default: on for a PACS "
            "source and for SR / HL7 / FHIR reports)")  # fmt: skip
    _option(p, "--no-deid", key="deid", schema=s, action="store_const", const="off",
            help="keep ids and report text as they are, even for a PACS source")  # fmt: skip
    pacs = p.add_argument_group(
        "PACS sources (credentials: env MEDCLIP_DICOMWEB_USER/_PASSWORD or _TOKEN, or ~/.netrc)"
    )
    _option(pacs, "--since", key="since", schema=s, metavar="DATE", help="only studies from this StudyDate on "
            "(YYYY-MM-DD)")  # fmt: skip
    _option(pacs, "--workers", key="workers", schema=s, type=int, help="studies retrieved in parallel")
    _option(pacs, "--retries", key="retries", schema=s, type=int, help="tries per study (exponential backoff)")
    _option(pacs, "--retrieve", key="retrieve", schema=s, choices=("get", "move"), help="DIMSE: C-GET on the "
            "association, or C-MOVE to a local storage SCP (--calling-ae, --store-port)")  # fmt: skip
    _option(pacs, "--calling-ae", key="calling_ae", schema=s, metavar="AE", help="DIMSE: our AE title")
    _option(pacs, "--store-port", key="store_port", schema=s, type=int, help="DIMSE C-MOVE: port of the local "
            "storage SCP, as the PACS knows it (default 0: any free port)")  # fmt: skip
    _registry_option(
        p,
        "--labels",
        key="labels",
        schema=s,
        names=RegistryChoices(_label_sets),
        metavar="SET",
        help="attach report labels to the manifest",
    )
    _config_args(p, "manifest")
    p.set_defaults(func=commands.cmd_manifest)


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", **_parser_kwargs("prepare", "decode + resize manifest images once into shards"))
    p.add_argument("manifest", help="a `medclip manifest` output folder (or URL: s3://...)")
    p.add_argument("--out", required=True, help="shard folder or URL, e.g. s3://bucket/shards (rerunning into it "
                   "skips finished shards)")  # fmt: skip
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes, or LocalCluster "
                   "workers with --executor dask (default: all cores)")  # fmt: skip
    p.add_argument("--executor", choices=EXECUTORS, default="local", help="local: processes on this machine; dask: "
                   "one task per shard on a Dask cluster (--scheduler, else a LocalCluster of --workers)")  # fmt: skip
    p.add_argument("--scheduler", default="", metavar="tcp://HOST:8786", help="dask: a running Dask scheduler")
    p.add_argument("--shard", default=None, help="I/N: this machine's part of N (blocks k with k %% N == I)")
    p.add_argument("--image-size", type=int, default=0, help="side in px (default: the config's, else 224)")
    p.add_argument("--config", default=None, help="take the preprocess recipe from this YAML / packaged config")
    p.set_defaults(func=commands.cmd_prepare)


class HelpParser(argparse.ArgumentParser):
    """A parser whose ``--help`` may end with text computed when it is printed (registry contents)."""

    def __init__(self, *args: Any, help_tail: Callable[[], str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help_tail = help_tail

    def format_help(self) -> str:
        text = super().format_help()
        return f"{text}\n{self.help_tail()}\n" if self.help_tail else text


def _train_choices() -> str:
    from medclip.losses import LOSSES
    from medclip.models.factory import image_tower_names

    return (
        f"registered image towers (model.image.name; any timm model name works too): {', '.join(image_tower_names())}"
        f"\nlosses (loss.name): {', '.join(LOSSES.list())}"
    )


def _add_train(sub) -> None:
    p = sub.add_parser("train", help_tail=_train_choices,
                       **_parser_kwargs("train", "train a model from a YAML config (+ key=value overrides)"))  # fmt: skip
    p.add_argument("config", help="a YAML file or a packaged config name (demo_cxr, tiny, ...)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in train.out_dir/checkpoints (start fresh if none)")  # fmt: skip
    p.set_defaults(func=commands.cmd_train)


def _add_eval(sub) -> None:
    s = EvalCfg
    p = sub.add_parser("eval", **_parser_kwargs("eval", "evaluate a checkpoint: zero-shot, retrieval, linear probe"))
    _registry_option(p, "task", names=RegistryChoices(_eval_tasks, "all"), metavar="TASK", help="what to evaluate")
    _source_args(p, s)
    _option(p, "--labels", key="labels", schema=s, help="ground-truth CSV keyed by study_id (with --manifest)")
    _option(p, "--label-cols", key="label_cols", schema=s, type=_comma_list,
            help="comma-separated label columns of --csv (default: every 1/0/-1/blank column)")  # fmt: skip
    _option(p, "--boxes", key="grounding_csv", schema=s, help="grounding: (image, phrase, box) CSV in the MS-CXR "
            "layout (`eval grounding` also takes it as --csv)")  # fmt: skip
    _option(p, "--grounding-method", key="grounding_method", schema=s, choices=("auto", "local", "global"),
            help="grounding heat maps: local word-region heads, or the global head on each cell (default: auto)")  # fmt: skip
    _option(p, "--image-root", key="grounding_image_root", schema=s, help="grounding: folder the boxes CSV's relative "
            "image paths start from (default: the CSV's folder; for MS-CXR, the MIMIC-CXR-JPG root)")  # fmt: skip
    _option(p, "--prompts", key="prompts", schema=s, help="prompt set (cxr_demo, chexpert, chestxray14, ct, sketch) "
            "or a YAML file")  # fmt: skip
    _option(p, "--mode", key="mode", schema=s, choices=EVAL_MODES, help="zero-shot scoring")
    _option(p, "--split", key="split", schema=s, choices=EVAL_SPLITS, help="which split")
    _option(p, "--bootstrap", key="bootstrap", schema=s, type=int, help="bootstrap resamples for 95%% CIs (0: none)")
    _option(p, "--seed", key="seed", schema=s, type=int, help="bootstrap / sampling seed")
    _option(p, "--no-cache", key="cache", schema=s, action="store_const", const=False,
            help="recompute embeddings instead of reusing OUT/embeddings.*")  # fmt: skip
    _option(p, "--out", key="out_dir", schema=s, help="output directory or URL (default: next to the checkpoint; "
            "./RUN/ for a URL checkpoint)")  # fmt: skip
    _screening_args(p, s)
    _overlap_option(p, s)
    _config_args(p, "eval")
    p.set_defaults(func=commands.cmd_eval)


def _add_index(sub) -> None:
    p = sub.add_parser("index", **_parser_kwargs("index", "build or query a case index (similar prior cases)"))
    isub = p.add_subparsers(dest="index_command", required=True, metavar="{build,query}", parser_class=HelpParser)
    examples = EXAMPLES["index"].split("\n")
    b = isub.add_parser("build", help="embed every image and build a FAISS index", description="embed every image "
                        "and build a FAISS index", epilog="example:\n  " + examples[0].strip(),
                        formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    s = IndexBuildCfg
    _source_args(b, s)
    _option(b, "--out", key="out_dir", schema=s, help="index directory, or URL (s3://bucket/index: uploaded)")
    _option(b, "--split", key="split", schema=s, choices=EVAL_SPLITS, help="which split")
    _option(b, "--labels", key="labels", schema=s, help="labels CSV keyed by study_id (else the manifest's label "
            "columns): the page's label filter")  # fmt: skip
    _option(b, "--kind", key="params.kind", schema=s, choices=INDEX_KINDS,
            help="auto: exact below 50,000 images, IVF above")  # fmt: skip
    _option(b, "--compression", key="params.compression", schema=s, choices=INDEX_COMPRESSIONS,
            help="auto: none up to 2M images, rabitq above; int8/pq/rabitq: less memory")  # fmt: skip
    _option(b, "--nlist", key="params.nlist", schema=s, type=int, help="IVF cells (0: ~2 sqrt(N))")
    _option(b, "--nprobe", key="params.nprobe", schema=s, type=int, help="IVF cells searched per query")
    _overlap_option(b, s)
    _config_args(b, "index build")
    q = isub.add_parser("query", help="similar cases for a text or an image file", description="similar cases for a "
                        "text or an image file", epilog="example:\n  " + examples[1].strip(),
                        formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    s = IndexQueryCfg
    q.add_argument("index", help="index directory or URL (from `medclip index build`)")
    q.add_argument("query", help="query text, or the path of an image (DICOM / PNG / JPEG)")
    _option(q, "-k", key="k", schema=s, type=int, help="number of cases")
    _option(q, "--json", key="json", schema=s, help="write the answer here, a path or URL (default "
            "IDX/last_query.json; ./last_query.json for a URL index)")  # fmt: skip
    _option(q, "--all-images", key="unique_studies", schema=s, action="store_const", const=False,
            help="list every matching image, not one per study")  # fmt: skip
    _option(q, "--nprobe", key="nprobe", schema=s, type=int, help="override the index's IVF nprobe (0: keep)")
    _option(q, "--checkpoint", key="checkpoint", schema=s, help="the checkpoint the index was built with, if it moved")
    _option(q, "--device", key="device", schema=s, help="cpu, cuda, cuda:N")
    _option(q, "--modality", key="modality", schema=s, help="search only the images of this modality (e.g. CR, DX, CT)")
    _option(q, "--label", key="label", schema=s, help="search only the images with this label positive")
    _config_args(q, "index query")
    p.set_defaults(func=commands.cmd_index)


def _add_label(sub) -> None:
    p = sub.add_parser("label", **_parser_kwargs("label", "label reports: positive / negative / uncertain per finding"))
    p.add_argument(
        "reports", help="CSV / parquet / JSONL with an id and a text (or report-path) column, or a folder of .txt"
    )
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument("--labels", default="chexpert", help="label set: chexpert, chestxray14, or one defined in --rules")
    p.add_argument("--sections", default="impression,findings", help="comma-separated sections to read")
    p.add_argument("--rules", help="a user YAML adding phrases, triggers or label sets")
    p.add_argument("--id-column")
    p.add_argument("--text-column")
    p.set_defaults(func=commands.cmd_label)


def _bench_presets() -> list[str]:
    from medclip.bench import PRESETS

    return PRESETS.list()


def _add_bench(sub) -> None:
    s = BenchCfg
    p = sub.add_parser(
        "bench", **_parser_kwargs("bench", "a published evaluation protocol on a dataset in its official layout")
    )
    p.add_argument("name", nargs="?", default=None, metavar="NAME", choices=RegistryChoices(_bench_presets),
                   help="the preset (see --list)")  # fmt: skip
    p.add_argument("--list", action="store_true", help="list the presets, what each measures and its layout")
    _option(p, "--data", key="data", schema=s, help="the dataset folder as distributed (nothing is downloaded)")
    _option(p, "--checkpoint", key="checkpoint", schema=s, help="a run's final/ directory, or its URL (s3://...)")
    _option(p, "--out", key="out_dir", schema=s, help="output directory or URL (default: next to the checkpoint; "
            "./RUN/ for a URL checkpoint)")  # fmt: skip
    _option(p, "--prompts", key="prompts", schema=s, help="another prompt set (default: the preset's; recorded)")
    _option(p, "--bootstrap", key="bootstrap", schema=s, type=int, help="bootstrap resamples for 95%% CIs")
    _option(p, "--seed", key="seed", schema=s, type=int, help="bootstrap / sampling seed")
    _option(p, "--batch-size", key="batch_size", schema=s, type=int, help="images per forward pass")
    _option(p, "--device", key="device", schema=s, help="cpu, cuda, cuda:N")
    _option(p, "--no-cache", key="cache", schema=s, action="store_const", const=False,
            help="recompute embeddings instead of reusing OUT/embeddings.*")  # fmt: skip
    _option(p, "--compare", key="compare", schema=s,
            help="an earlier bench results.json: print the difference (refused unless the protocols match)")  # fmt: skip
    _screening_args(p, s)
    _config_args(p, "bench")
    p.set_defaults(func=commands.cmd_bench)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", **_parser_kwargs("serve", "a local web page (and JSON API) over a case index"))
    s = ServeCfg
    _option(p, "--checkpoint", key="checkpoint", schema=s, help="the checkpoint the index was built with")
    _option(p, "--index", key="index", schema=s, help="index directory or URL (`medclip index build`)")
    _option(
        p, "--host", key="host", schema=s, help="address to bind (default 127.0.0.1; any other needs MEDCLIP_TOKEN)"
    )
    _option(p, "--port", key="port", schema=s, type=int, help="port (default 8000)")
    _option(p, "--prompts", key="prompts", schema=s, help="screening prompt set or YAML (default: the checkpoint's)")
    _option(p, "--mode", key="mode", schema=s, choices=EVAL_MODES, help="zero-shot mode (default: the checkpoint's)")
    _option(p, "--max-upload-mb", key="max_upload_mb", schema=s, type=float, help="upload size limit (default 64)")
    _option(p, "--nprobe", key="nprobe", schema=s, type=int, help="override the index's IVF nprobe (0: keep)")
    _option(p, "--device", key="device", schema=s, help="cpu, cuda, cuda:N")
    _config_args(p, "serve")
    p.set_defaults(func=commands.cmd_serve)


def _add_ground(sub) -> None:
    p = sub.add_parser("ground", **_parser_kwargs("ground", "heat map of where a phrase lands on an image"))
    s = GroundCfg
    p.add_argument("image", nargs="?", default=None, help="DICOM / PNG / JPEG (a CT series folder or NIfTI: 3-D)")
    p.add_argument("phrase", nargs="*", default=[], help='one or more phrases ("left pleural effusion")')
    _option(p, "--checkpoint", key="checkpoint", schema=s, help="a run's final/ directory")
    _option(p, "--out", key="out_dir", schema=s, help="output folder for the overlay PNG(s) and grounding.json")
    _option(p, "--method", key="method", schema=s, choices=("auto", "local", "global"),
            help="local word-region heads or the global head on each cell (default: auto)")  # fmt: skip
    _option(p, "--device", key="device", schema=s, help="cpu, cuda, cuda:N")
    p.add_argument("--config", default=None, help="a YAML file of ground keys (flags override it)")
    p.set_defaults(func=commands.cmd_ground, overrides=[])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medclip",
        description="Medical image-report contrastive learning: archive -> manifest -> CLIP model -> evaluation.",
        epilog="example:\n  " + "\n  ".join(EXAMPLES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=HelpParser)
    for add in (
        _add_demo,
        _add_synth,
        _add_manifest,
        _add_prepare,
        _add_train,
        _add_eval,
        _add_bench,
        _add_index,
        _add_serve,
        _add_ground,
        _add_label,
    ):
        add(sub)
    p = sub.add_parser("sections", **_parser_kwargs("sections", "print a report's parsed sections as JSON"))
    p.add_argument("report")
    p.set_defaults(func=commands.cmd_sections)
    return parser
