"""The ``medflow`` command: the workflow's stages by hand, for inspecting and preparing cohorts."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import medflow
from medflow.cohort.demo import generate_demo_cohort, get_template, list_templates
from medflow.cohort.importers import get_importer, list_importers, run_importer


def _cmd_demo(args: argparse.Namespace) -> int:
    manifest = generate_demo_cohort(
        args.template, args.out, patients=args.patients, image_size=args.image_size, seed=args.seed
    )
    print(manifest)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    options = {o.name: getattr(args, o.name) for o in get_importer(args.layout).options}
    manifest = run_importer(args.layout, args.source, args.out, **options)
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


def _cmd_scoreboard(args: argparse.Namespace) -> int:
    from medflow.config import load_config
    from medflow.report.scoreboard import scoreboard, to_markdown

    config = load_config(args.config)
    unknown = [s for s in args.study if s not in config["studies"]]
    if unknown:
        print(f"unknown study {unknown[0]!r}; studies in {args.config}: {', '.join(config['studies'])}", file=sys.stderr)
        return 2
    table = scoreboard(config, args.study or None)
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(to_markdown(table))
    return 0


def _registered(kind: str) -> list[tuple[str, str]]:
    """(name, one line) of every entry of one registry: the names a config may use."""
    if kind == "heads":
        from medflow.heads.registry import get_head_type, list_head_types

        return [(n, get_head_type(n).description) for n in list_head_types(configurable=True)] + [
            ("fusion_grid", "EHR study: expands into unimodal and early/joint/late fusion heads per modality set and task")]
    if kind == "importers":
        return [(n, get_importer(n).description) for n in list_importers()]
    if kind == "templates":
        return [(n, get_template(n).description) for n in list_templates()]
    from medflow.evaluate.registry import list_metrics

    return [(m.key, ", ".join(c.label for c in m.columns) or "(feeds the figures and page text)") for m in list_metrics()]


def _cmd_list(args: argparse.Namespace) -> int:
    entries = _registered(args.kind)
    width = max(len(name) for name, _ in entries)
    for name, what in entries:
        print(f"{name:<{width}}  {what}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    templates = "\n".join(f"  {n:<10} {get_template(n).description}" for n in list_templates())
    demo = sub.add_parser(
        "demo",
        help="write a synthetic demo cohort in the real file formats",
        description="Write a synthetic demo cohort in the real file formats.",
        epilog=f"templates:\n{templates}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("template", choices=list_templates())
    demo.add_argument("out", type=Path, help="cohort folder to write (replaced if it exists)")
    demo.add_argument("--patients", type=int, default=100)
    demo.add_argument("--image-size", type=int, default=64)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)


def _add_import(sub: argparse._SubParsersAction) -> None:
    """One subcommand per registered importer, with that importer's own options."""
    imp = sub.add_parser(
        "import",
        help="turn a public layout into a medflow cohort (manifest.csv)",
        description="Turn a public layout into a medflow cohort (manifest.csv and cohort.json in OUT). "
        "`medflow import LAYOUT --help` shows what SOURCE is and the layout's options.",
    )
    layouts = imp.add_subparsers(dest="layout", required=True, title="layouts")
    for name in list_importers():
        entry = get_importer(name)
        layout = layouts.add_parser(name, help=entry.description, description=entry.description)
        layout.add_argument("source", type=Path, help=entry.reads)
        layout.add_argument("out", type=Path, help="folder for manifest.csv and cohort.json")
        for option in entry.options:
            layout.add_argument(
                option.flag,
                dest=option.name,
                type=option.type,
                default=option.default,
                help=f"{option.help} (default: %(default)s)",
            )
        layout.set_defaults(func=_cmd_import)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medflow", description=__doc__)
    parser.add_argument("--version", action="version", version=f"medflow {medflow.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_demo(sub)
    _add_import(sub)

    lst = sub.add_parser("list", help="what a config may name: head types, importers, demo templates, report metrics")
    lst.add_argument("kind", choices=("heads", "importers", "templates", "metrics"))
    lst.set_defaults(func=_cmd_list)

    cfg = sub.add_parser("check-config", help="validate a config file and list its studies")
    cfg.add_argument("config", type=Path, nargs="?", default=Path("config/config.yaml"))
    cfg.set_defaults(func=_cmd_check_config)

    man = sub.add_parser("check-manifest", help="validate a manifest against a study of the config")
    man.add_argument("manifest", type=Path)
    man.add_argument("--study", required=True)
    man.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    man.set_defaults(func=_cmd_check_manifest)

    board = sub.add_parser("scoreboard", help="test AUROC, oracle, gap and training AUROC of every evaluated model")
    board.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    board.add_argument("--study", action="append", default=[], help="one study (repeat for more; default: all)")
    board.add_argument("--csv", type=Path, help="also write the table as CSV")
    board.set_defaults(func=_cmd_scoreboard)
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
