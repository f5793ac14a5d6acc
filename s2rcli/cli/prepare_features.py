"""``s2r prepare spfeat`` and ``s2r prepare pairs``: SP-Feat vectors and the smart batch loader's KNN pairs."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ..console import info, stdout, warn
from ..data.datasets import open_dataset
from ..data.labels import get_label_space
from ..data.pairing import (check_compatible, load_pairs, pair_features, render_class_frequencies, render_preview,
                            save_pairs, summarize)
from ..data.spfeat import compute_spfeat_file, load_spfeat, parse_levels
from ..errors import S2RError
from ..evaluation import SegmenterLabels
from ..utils.atomic import refuse_overwrite
from ..utils.sizes import parse_size


def spfeat(
    spec: str = typer.Argument(..., help="Dataset spec KIND:PATH[?split=...]."),
    out: Path = typer.Option(..., "--out", metavar="PATH", help="Output .npz file."),
    levels: str = typer.Option("1,2,4", "--levels", metavar="N,N,...", help="Pyramid levels: each cuts the image into l x l slices."),
    space: str = typer.Option("cityscapes19", "--space", metavar="NAME", help="Common label space of the histograms."),
    segmenter: Path = typer.Option(None, "--segmenter", metavar="CKPT",
                                   help="Segmenter checkpoint: use its predictions instead of the dataset's labels."),
    segmenter_size: str = typer.Option(None, "--segmenter-size", metavar="HxW",
                                       help="Resize images to HxW before segmenting (default: native size)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes reading labels in parallel."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Compute Spatial Pyramid Features (per-slice class histograms) for every label map.

    A run that stops early leaves OUT.partial.npz; the same command continues from it (a partial computed from other data, labels or label space is refused: delete it or pass --overwrite). Each image is checked to decode to its end; with ?on_error=skip in the spec, unreadable images are left out and reported.
    """
    level_tuple = parse_levels(levels)
    refuse_overwrite(out, overwrite, "SP-Feat file")
    dataset = open_dataset(spec, space)
    labeller = SegmenterLabels(dataset, segmenter, parse_size(segmenter_size)) if segmenter is not None else None
    summary = compute_spfeat_file(dataset, out, level_tuple, workers, labeller, space=space, spec=spec,
                                  overwrite=overwrite)
    if as_json:
        stdout.print_json(json.dumps(summary))
        return
    table = Table(title="SP-Feat")
    table.add_column("key")
    table.add_column("value")
    for key in ("path", "images", "dim", "levels", "space", "source", "resumed", "skipped", "seconds"):
        table.add_row(key, str(summary[key]))
    stdout.print(table)


def _open_for_preview(spec: str | None, space: str, what: str):
    if not spec:
        warn(f"no {what} dataset spec is known; skipping the preview (pass --{what}-data SPEC)")
        return None
    try:
        return open_dataset(spec, space)
    except (S2RError, OSError) as exc:
        message = exc.one_line() if isinstance(exc, S2RError) else str(exc)
        warn(f"cannot read the {what} images ({message}); skipping the preview (pass --{what}-data SPEC)")
        return None


def _class_names(space: str, num_classes: int) -> list[str]:
    try:
        names = list(get_label_space(space).class_names)
        if len(names) == num_classes:
            return names
    except (S2RError, ImportError):
        pass
    return [f"class {c}" for c in range(num_classes)]


def pairs(
    real: Path = typer.Option(..., "--real", metavar="PATH", help="SP-Feat .npz of the real images (the queries)."),
    synthetic: Path = typer.Option(..., "--synthetic", metavar="PATH", help="SP-Feat .npz of the synthetic images."),
    k: int = typer.Option(15, "-k", "--k", min=1, help="Neighbours per real image."),
    out: Path = typer.Option(..., "--out", metavar="PATH", help="Output pairs .npz file (the pictures go beside it)."),
    max_uses: int = typer.Option(None, "--max-uses", min=1,
                                 help="Most real images one synthetic image may serve "
                                      "(default: ceil(2 * n_real * K / n_synthetic))."),
    search_depth: int = typer.Option(None, "--search-depth", min=1,
                                     help="How far down its neighbour list a real image may look for a replacement "
                                          "before the quota gives way (default: all synthetic images)."),
    metric: str = typer.Option("euclidean", "--metric", metavar="METRIC", help="euclidean, manhattan or cosine."),
    real_data: str = typer.Option(None, "--real-data", metavar="SPEC", help="Real dataset spec for the preview (default: from the .npz)."),
    synthetic_data: str = typer.Option(None, "--synthetic-data", metavar="SPEC",
                                       help="Synthetic dataset spec for the preview (default: from the .npz)."),
    preview: bool = typer.Option(True, "--preview/--no-preview", help="Write pairs_preview.png and class_frequencies.png."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Pair each real image with its K nearest synthetic images by SP-Feat.

    Over-used synthetic images are capped and replaced by the next nearest; each
    gets the weight 1/uses. Prints coverage, neighbour distances and the most-used images.
    The pairs file records which image files both sides came from, so `s2r train --smart-batch` can check it; --real and --synthetic must hold different images.
    """

    real_file, syn_file = load_spfeat(real), load_spfeat(synthetic)
    check_compatible(real_file, syn_file)
    preview_path = out.parent / "pairs_preview.png"
    freq_path = out.parent / "class_frequencies.png"
    for path in [out] + ([preview_path, freq_path] if preview else []):
        refuse_overwrite(path, overwrite)
    result = pair_features(real_file.features, syn_file.features, k, max_uses=max_uses, search_depth=search_depth,
                           metric=metric)
    save_pairs(out, result, real_file, syn_file, overwrite=overwrite)
    summary = summarize(result, syn_file.names) | {"path": str(out)}

    if preview:
        render_class_frequencies(freq_path, real_file.class_pixels, syn_file.class_pixels,
                                 _class_names(real_file.space, real_file.num_classes))
        summary["class_frequencies"] = str(freq_path)
        real_ds = _open_for_preview(real_data or real_file.spec, real_file.space, "real")
        syn_ds = _open_for_preview(synthetic_data or syn_file.spec, syn_file.space, "synthetic")
        if real_ds is not None and syn_ds is not None:
            missing = (set(real_file.names) - set(real_ds.names)) | (set(syn_file.names) - set(syn_ds.names))
            if missing:
                warn(f"{len(missing)} names in the SP-Feat files are not in the datasets; skipping the preview")
            else:
                render_preview(preview_path, load_pairs(out), real_ds, syn_ds)
                summary["preview"] = str(preview_path)
        if "preview" not in summary and preview_path.exists():
            warn(f"{preview_path} is from an earlier run, not from these pairs")

    if as_json:
        stdout.print_json(json.dumps(summary))
        return
    _print_summary(summary)


def _print_summary(s: dict) -> None:
    d = s["distance"]
    table = Table(title=f"SP-Feat pairs: {s['real']} real x {s['synthetic']} synthetic, K={s['k']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("coverage (synthetic images in any list)", f"{100 * s['coverage']:.1f}%")
    table.add_row("coverage of plain KNN (no quota)", f"{100 * s['coverage_plain_knn']:.1f}%")
    table.add_row("max uses per synthetic image", str(s["max_uses"]))
    table.add_row("slots replaced by a farther neighbour", str(s["replaced_slots"]))
    table.add_row("slots over the quota (fallback)", str(s["over_quota_slots"]))
    table.add_row(f"{s['metric']} distance min / median / max",
                  f"{d['min']:.4f} / {d['median']:.4f} / {d['max']:.4f}")
    table.add_row("distance p25 / p75 / mean", f"{d['p25']:.4f} / {d['p75']:.4f} / {d['mean']:.4f}")
    table.add_row("mean distance to 1st / K-th neighbour", f"{d['nearest_mean']:.4f} / {d['kth_mean']:.4f}")
    table.add_row("mean distance, plain KNN lists", f"{d['plain_knn_mean']:.4f}")
    stdout.print(table)
    used = Table(title="Most-used synthetic images")
    for column in ("name", "uses", "plain KNN uses", "weight"):
        used.add_column(column, justify="left" if column == "name" else "right")
    for row in s["most_used"]:
        used.add_row(row["name"], str(row["uses"]), str(row["plain_knn_uses"]), f"{row['weight']:.3f}")
    stdout.print(used)
    for key in ("path", "preview", "class_frequencies"):
        if key in s:
            info(f"wrote {s[key]}")


def register(app: typer.Typer) -> None:
    app.command("spfeat", epilog="Example: s2r prepare spfeat demo:demo?split=real --out real.npz")(spfeat)
    app.command("pairs", epilog="Example: s2r prepare pairs --real real.npz --synthetic syn.npz -k 15 --out pairs.npz")(pairs)
