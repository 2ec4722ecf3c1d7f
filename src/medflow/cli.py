"""The ``medflow`` command: the workflow's stages by hand, for inspecting and preparing cohorts."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import medflow


def _cmd_demo(args: argparse.Namespace) -> int:
    from medflow.cohort.demo import generate_demo_cohort

    manifest = generate_demo_cohort(
        args.template, args.out, patients=args.patients, image_size=args.image_size, seed=args.seed
    )
    print(manifest)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from medflow.cohort.importers import run_importer

    manifest = run_importer(args.layout, args.source, args.out, workers=args.workers)
    print(manifest)
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    from medflow.config import load_config

    config = load_config(args.config)
    for name, study in config["studies"].items():
        mods = ", ".join(f"{m} ({s['kind']})" for m, s in study["modalities"].items())
        print(f"{name}: source={study['cohort']['source']} labels={','.join(study['labels'])} modalities: {mods}")
    return 0


def _cmd_check_manifest(args: argparse.Namespace) -> int:
    from medflow.cohort.manifest import load_manifest
    from medflow.config import load_config

    config = load_config(args.config)
    if args.study not in config["studies"]:
        print(f"unknown study {args.study!r}; studies in {args.config}: {', '.join(config['studies'])}", file=sys.stderr)
        return 2
    cohort = load_manifest(args.manifest, config["studies"][args.study])
    for warning in cohort.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    frame = cohort.manifest
    print(f"{args.manifest}: {len(frame)} samples, {frame['patient_id'].nunique()} patients, "
          f"centres {', '.join(sorted(frame['center'].unique()))}: OK")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medflow", description=__doc__)
    parser.add_argument("--version", action="version", version=f"medflow {medflow.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="write a synthetic demo cohort in the real file formats")
    demo.add_argument("template", choices=["clnm", "brainmets", "lnmc", "pe", "ehr"])
    demo.add_argument("out", type=Path, help="cohort folder to write (replaced if it exists)")
    demo.add_argument("--patients", type=int, default=100)
    demo.add_argument("--image-size", type=int, default=64)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)

    imp = sub.add_parser("import", help="turn a public layout into a medflow cohort (manifest.csv)")
    imp.add_argument("layout", choices=["luna-patches", "rsna-pe"])
    imp.add_argument("source", type=Path, help="all_patches.hdf5, or the RSNA-PE folder holding train.csv")
    imp.add_argument("out", type=Path, help="folder for manifest.csv and cohort.json")
    imp.add_argument("--workers", type=int, default=4, help="threads for scanning folders")
    imp.set_defaults(func=_cmd_import)

    cfg = sub.add_parser("check-config", help="validate a config file and list its studies")
    cfg.add_argument("config", type=Path, nargs="?", default=Path("config/config.yaml"))
    cfg.set_defaults(func=_cmd_check_config)

    man = sub.add_parser("check-manifest", help="validate a manifest against a study of the config")
    man.add_argument("manifest", type=Path)
    man.add_argument("--study", required=True)
    man.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    man.set_defaults(func=_cmd_check_manifest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        # Our errors carry a message meant for the user; a traceback would bury it.
        print(f"medflow {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
