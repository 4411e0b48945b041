"""The dataset checks for a run's config: ``unetseg check-data`` prints them, ``unetseg train`` refuses to start
on errors. Both run the same code: :func:`scan`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unetseg.config import DataConfig, RunConfig
from unetseg.data.ceiling import dataset_ceiling, dice_from_iou
from unetseg.data.classes import (ClassEntry, class_names, default_colour, default_names, hex_colour,
                                  read_classes_file)
from unetseg.data.dataset import ArrayDataset, DataReport, load_dataset
from unetseg.data.encoding import MaskEncoding
from unetseg.data.errors import DataError
from unetseg.data.pairing import Pair, Pairing, pair_files
from unetseg.data.split import describe_split, leak_warning, split_pairs


def encoding_of(cfg: DataConfig) -> MaskEncoding | None:
    """The mask encoding saved in a config (None before the data has been seen)."""
    if cfg.mask_values is None:
        return None
    palette = tuple(cfg.mask_palette) if cfg.mask_palette else None
    return MaskEncoding(tuple(cfg.mask_values), cfg.mask_mode or ("P" if palette else "L"), palette,
                        tuple(cfg.ignore_index))


def scan(cfg: RunConfig, progress: bool = True, cache_file: Path | None = None,
         pairing: Pairing | None = None) -> tuple[ArrayDataset | None, DataReport]:
    """Pair, check and decode the dataset ``cfg.data`` names, at ``cfg.data.image_size``.

    The image channels and class count follow the data unless ``cfg.data.follow_channels`` /
    ``follow_classes`` are off; a config that already holds a mask encoding (a resumed run) keeps it.

    Returns:
        (dataset or None when there are errors, report).
    """
    pairing = pairing or pair_files(cfg.data)
    # the classes file is read when the run starts; a resumed run (mask_values stored) keeps its names and colours
    table = read_classes_file(cfg.data.classes) if cfg.data.classes and cfg.data.mask_values is None else None
    data, report = load_dataset(pairing, cfg.data.image_size,
                                channels=None if cfg.data.follow_channels else cfg.model.in_channels,
                                num_classes=None if cfg.data.follow_classes else cfg.model.num_classes,
                                encoding=encoding_of(cfg.data), invert=cfg.data.invert_mask, snap=cfg.data.snap_masks,
                                progress=progress, cache_file=cache_file, ignore=tuple(cfg.data.ignore_index),
                                table=table, table_path=cfg.data.classes)
    if report.encoding is not None:
        try:
            report.names, report.colours = names_for(cfg.data, report.encoding, table)
        except DataError as err:
            report.errors.append(str(err))
    if pairing.pairs:
        check_split(pairing.pairs, cfg.data, report)
    return data, report


def names_for(cfg: DataConfig, encoding: MaskEncoding,
              table: list[ClassEntry] | None) -> tuple[list[str], list[str]]:
    """The class names and display colours (#rrggbb): the classes file's (ignored values left out, a class without a
    colour gets a default one), else --class-names or the defaults, and no colours.

    Raises:
        DataError: when --class-names gives another count than the classes found.
    """
    if table is not None:
        by_value = {e.stored(encoding.mode): e for e in table}
        entries = [by_value[v] for v in encoding.values]
        return [e.name for e in entries], [hex_colour(e.colour or default_colour(k, len(entries)))
                                           for k, e in enumerate(entries)]
    if cfg.class_names and len(cfg.class_names) != encoding.num_labels:
        raise DataError(f"--class-names: {len(cfg.class_names)} names for {encoding.num_labels} classes "
                        f"{encoding.describe(encoding.values)}" + (f" (ignored: {encoding.describe(encoding.ignore)})"
                                                                   if encoding.ignore else ""))
    return class_names(cfg.class_names, encoding.num_labels), []


def check_split(pairs: list[Pair], cfg: DataConfig, report: DataReport) -> None:
    """Add the train/validation split the run would make to the report's notes, and a warning when validation
    comes out empty or far from ``val_fraction`` (too few groups), or leaks (video frames split per image)."""
    train_idx, val_idx = split_pairs(pairs, cfg)
    by_share = not any(p.split == "val" for p in pairs) and not (cfg.folds > 1 and cfg.fold is not None)
    report.notes.append(f"split: {len(train_idx)} train / {len(val_idx)} validation images ({describe_split(pairs, cfg)}"
                        + (f"; --val-fraction {cfg.val_fraction:g}" if by_share else "") + ")")
    leak = leak_warning(pairs, cfg)
    if leak:
        report.warnings.insert(0, leak)
    if not by_share:  # validation folders, or a fold of a cross-validation run
        return
    groups = len({p.group for p in pairs})
    rule = describe_split(pairs, cfg)
    share = len(val_idx) / len(pairs)
    if cfg.val_fraction > 0 and not val_idx:
        report.warnings.insert(0, f"{pairs[0].image.parent}: no validation split ({len(pairs)} images in {groups} "
                               f"group(s)): no validation Dice, and the final weights are the only ones; give more "
                               f"images or a --group-pattern with more groups")
    elif cfg.val_fraction > 0 and not 0.5 * cfg.val_fraction <= share <= 2 * cfg.val_fraction:
        report.warnings.insert(0, f"{pairs[0].image.parent}: validation holds {share:.0%} of the images, not the "
                               f"{cfg.val_fraction:.0%} asked: only {groups} groups ({rule}) to split")


def adopt(cfg: RunConfig, data: ArrayDataset, report: DataReport) -> None:
    """Write what the data decided into ``cfg``: mask encoding, in_channels and num_classes (when following)."""
    enc = data.encoding
    cfg.data.mask_values, cfg.data.mask_mode = list(enc.values), enc.mode
    cfg.data.mask_palette = list(enc.palette) if enc.palette else None
    if report.names and (cfg.data.classes or cfg.data.class_names):  # stored with the run: no file needed later
        cfg.data.class_names = list(report.names)
    if report.colours:
        cfg.data.class_colours = list(report.colours)
    if cfg.data.follow_channels:
        cfg.model.in_channels = report.channels
    if cfg.data.follow_classes:
        cfg.model.num_classes = 1 if enc.num_labels == 2 else enc.num_labels
    if len(cfg.data.mean) != cfg.model.in_channels:  # greyscale data with the RGB default normalisation
        if len(set(cfg.data.mean)) == 1 and len(set(cfg.data.std)) == 1:
            cfg.data.mean = (cfg.data.mean[0],) * cfg.model.in_channels
            cfg.data.std = (cfg.data.std[0],) * cfg.model.in_channels
        else:
            raise ValueError(f"--mean/--std have {len(cfg.data.mean)} values but the images have "
                             f"{cfg.model.in_channels} channel(s)")


def format_report(report: DataReport) -> str:
    """The check-data report: facts first, then every problem with its file."""
    lines = [f"pairing: {report.rule}, {report.pairs} pairs"]
    sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in report.image_sizes.most_common(5))
    more = f", ... {len(report.image_sizes) - 5} more sizes" if len(report.image_sizes) > 5 else ""
    lines.append(f"image sizes: {sizes or 'none readable'}{more}")
    lines.append(f"channels: {report.channels} ({'greyscale' if report.channels == 1 else 'RGB'})")
    enc = report.encoding
    if enc is not None:
        kind = {"P": "palette indices", "L": "grey levels", "RGB": "RGB colours"}[enc.mode]
        lines.append(f"mask encoding: {kind} {enc.describe(enc.values)} -> classes 0..{enc.num_labels - 1}"
                     f" ({'binary: 1 output, sigmoid + BCE' if enc.num_labels == 2 else f'{enc.num_labels} outputs, softmax + CE'})")
        if enc.ignore:
            lines.append(f"ignored (void) values: {enc.describe(enc.ignore)}, {report.void_pixels} pixels, counted in "
                         f"neither loss nor metrics")
        total = sum(report.class_pixels) or 1
        named = report.names and report.names != default_names(enc.num_labels)
        lines.append("class pixel fractions: " + ", ".join(
            f"{k} {report.names[k]}: {n / total:.4f}" if named else f"{k}: {n / total:.4f}"
            for k, n in enumerate(report.class_pixels)))
    if report.ignore_masks:
        lines.append(f"ignore masks: {report.ignore_masks}, {report.ignored_share:.1%} of their pixels count in neither "
                     f"loss nor metrics")
    lines += [f"note: {n}" for n in report.notes]
    lines += [f"warning: {w}" for w in report.warnings[:20]]
    if len(report.warnings) > 20:
        lines.append(f"warning: ... {len(report.warnings) - 20} more")
    lines += [f"error: {e}" for e in report.errors]
    lines.append(f"{len(report.errors)} error(s), {len(report.warnings)} warning(s): "
                 + ("cannot train" if report.errors else "ready to train"))
    return "\n".join(lines)


#: Shares of the images' width and height at which ``check-data`` shows the resolution ceiling.
CEILING_SHARES = (0.75, 0.5, 1 / 3, 0.25, 1 / 6)


def ceiling_sizes(native: tuple[int, int], given: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """Sizes (multiples of 16, at least 32) at CEILING_SHARES of ``native``, and ``given`` (a run's size)."""
    sizes = {(max(32, 16 * round(native[0] * f / 16)), max(32, 16 * round(native[1] * f / 16))) for f in CEILING_SHARES}
    if given is not None:
        sizes.add(tuple(given))
    return sorted((s for s in sizes if s[0] * s[1] < native[0] * native[1]), key=lambda s: -s[0] * s[1])


def ceiling_lines(pairing: Pairing, cfg: DataConfig, report: DataReport) -> list[str]:
    """``check-data``'s resolution ceiling: at a few sizes, the best Dice of each class a model trained at that size
    can reach at the masks' own size (:mod:`unetseg.data.ceiling`), its worst class named."""
    if not pairing.pairs or report.encoding is None or not report.image_sizes or cfg.snap_masks:
        return []  # snapped (JPEG) masks: their stray values are not classes
    native = report.image_sizes.most_common(1)[0][0]
    sizes = ceiling_sizes(native, cfg.image_size if cfg.image_size != DataConfig().image_size else None)
    try:
        rows, k = dataset_ceiling([p.mask for p in pairing.pairs], sizes, cfg.ignore_index)
    except Exception as err:  # noqa: BLE001 - a fact for the user, never a reason to refuse the data
        return [f"resolution ceiling: not computed ({err})"]
    if k == 0:
        return []
    # the sampled masks' classes are their stored values in sorted order: the encoding's names apply where its
    # values are in that order too (not inverted, not colours in a classes file's order)
    values = list(report.encoding.values)
    named = len(report.names) == k and values == sorted(values) and not cfg.invert_mask
    names = report.names if named else [str(i) for i in range(k)]
    lines = [f"resolution ceiling (the best Dice a model trained at a size can reach at the masks' own size, masks "
             f"shrunk as training does and predictions enlarged back; sampled masks):"]
    for size, row in zip(sizes, dice_from_iou(rows)):
        scored = [(v, n) for v, n in zip(row, names) if not np.isnan(v)]
        worst = min(scored) if scored else (1.0, "-")
        lines.append(f"  at {size[0]}x{size[1]} ({size[0] / native[0]:.2g} of {native[0]}x{native[1]}): Dice <= "
                     f"{worst[0]:.3f} ({'worst class ' + worst[1] if k > 2 else 'the foreground'})"
                     + (f"; mean over classes {np.mean([v for v, _ in scored]):.3f}" if k > 2 and scored else ""))
    lines.append(f"  at {native[0]}x{native[1]} or on --patch crops of it: 1.0 (a --budget run trains full-resolution "
                 f"patches where the {'foreground' if k <= 2 else 'mean over classes'} falls under 0.90 at the sizes "
                 f"it would choose from, and the images share one size)")
    return lines
