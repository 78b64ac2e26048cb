"""Value checks of a COCO results file, before pycocotools sees it (it would raise a traceback,
or score nonsense without a word).

Refused (DataError, one line naming the file, the first bad entry, the field and what is
allowed): ids that are not integers (`category_id: true` included), scores that are not finite
numbers, box / keypoint values that are not numbers (strings, null, nested lists), RLE counts that
do not decode to exactly height x width pixels, RLE sizes that differ from their image's.
Dropped with a warning that names the count: boxes with a NaN or infinite value, a negative width
or height, or a value beyond `MAX_COORD` (1e308 would overflow the area): a detector can emit
those, and one bad box should not cost the whole evaluation.
"""
from __future__ import annotations

import logging
import math
from typing import Any

from compress.core.errors import DataError

log = logging.getLogger(__name__)

MAX_COORD = 1e7  # pixels; no image is larger


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _refuse(path: str, index: int, field: str, value: Any, allowed: str, count: int) -> DataError:
    more = f" ({count} result(s) in all)" if count > 1 else ""
    return DataError(f"{str(value)[:60]!s} is not allowed{more}; allowed: {allowed}", file=path,
                     key=f"results[{index}].{field}")


def _first_bad(results: list[dict], field: str, ok: Any) -> tuple[int, int]:
    bad = [i for i, r in enumerate(results) if not ok(r.get(field))]
    return (bad[0], len(bad)) if bad else (-1, 0)


def check_types(results: list[dict], path: str) -> None:
    """image_id and category_id integers, score a finite number."""
    for field in ("image_id", "category_id"):
        index, count = _first_bad(results, field, lambda v: isinstance(v, int) and not isinstance(v, bool))
        if count:
            raise _refuse(path, index, field, repr(results[index][field]), "an integer id", count)
    index, count = _first_bad(results, "score", lambda v: _is_number(v) and math.isfinite(v))
    if count:
        raise _refuse(path, index, "score", repr(results[index]["score"]), "a finite number", count)


def check_numbers(results: list[dict], field: str, path: str, allowed: str, *,
                  optional: bool = False) -> None:
    """Every value of the list `field` (bbox, keypoints) is a number (not a string/null/list);
    with `optional`, results without the field pass."""
    def ok(result: dict) -> bool:
        if optional and field not in result:
            return True
        value = result.get(field)
        return isinstance(value, list) and all(map(_is_number, value))
    bad = [i for i, r in enumerate(results) if not ok(r)]
    if bad:
        raise _refuse(path, bad[0], field, results[bad[0]].get(field), allowed, len(bad))


def _box_ok(box: list[float]) -> bool:
    return (len(box) == 4 and all(math.isfinite(v) and abs(v) <= MAX_COORD for v in box)
            and box[2] >= 0 and box[3] >= 0)


def drop_bad_boxes(results: list[dict], path: str) -> list[dict]:
    """The results whose bbox is finite, of non-negative size and within MAX_COORD; a warning
    names how many were dropped."""
    kept = [r for r in results if "bbox" not in r or _box_ok(r["bbox"])]
    dropped = len(results) - len(kept)
    if dropped:
        first = next(i for i, r in enumerate(results) if "bbox" in r and not _box_ok(r["bbox"]))
        log.warning("%s: dropped %d of %d result(s) whose bbox has a NaN or infinite value, a "
                    "negative width or height, or a value beyond %.0e px (first: results[%d].bbox"
                    " = %s)", path, dropped, len(results), MAX_COORD, first,
                    str(results[first]["bbox"])[:80])
    return kept


def rle_counts(counts: Any) -> list[int]:
    """The run lengths of an RLE's `counts` (a list of ints, or COCO's compressed string, decoded
    as pycocotools' rleFrString does); ValueError when it is neither."""
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            raise ValueError("a counts list must hold integers")
        return counts
    if not isinstance(counts, str):
        raise ValueError(f"counts is {type(counts).__name__}")
    out: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(counts):
                raise ValueError("counts string ends inside a number")
            code = ord(counts[pos]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"character {counts[pos]!r} is not in COCO's RLE alphabet")
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            pos, shift = pos + 1, shift + 1
            if not more and code & 0x10:
                value |= -1 << (5 * shift)
        out.append(value + out[-2] if len(out) > 2 else value)
    return out


def check_rles(results: list[dict], gt: dict, path: str) -> None:
    """Each segmentation is an RLE of its image's size whose counts cover it exactly."""
    sizes = {img.get("id"): [img.get("height"), img.get("width")] for img in gt["images"]}
    for index, result in enumerate(results):
        rle = result["segmentation"]
        size = rle.get("size")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s >= 0 for s in size)):
            raise _refuse(path, index, "segmentation.size", size, "[height, width] integers", 1)
        wanted = sizes.get(result["image_id"])
        if wanted and None not in wanted and size != wanted:
            raise _refuse(path, index, "segmentation.size", size,
                          f"its image's size {wanted} ([height, width])", 1)
        try:
            counts = rle_counts(rle.get("counts"))
        except ValueError as err:
            raise _refuse(path, index, "segmentation.counts", err, "COCO RLE counts (a string as "
                          "pycocotools writes it, or a list of run lengths)", 1) from err
        if any(c < 0 for c in counts) or sum(counts) != size[0] * size[1]:
            raise _refuse(path, index, "segmentation.counts",
                          f"runs covering {sum(counts)} pixels", f"runs >= 0 covering height x "
                          f"width = {size[0] * size[1]} pixels", 1)
