"""Box arithmetic for the detectors' task checks: IoU, greedy matching, NMS, and the two
decoders (DB text maps of PP-OCR det, PicoDet heads of the layout model) as their packages
post-process them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["db_boxes", "iou", "match", "nms", "picodet_boxes"]


def iou(a: Sequence[float], b: np.ndarray) -> np.ndarray:
    """IoU of box `a` with each row of `b` ([N, 4], x0 y0 x1 y1)."""
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0, y0 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x1, y1 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.asarray(inter / np.maximum(area_a + area_b - inter, 1e-9))


def match(
    truth: Sequence[Sequence[float]], found: Sequence[Sequence[float]], min_iou: float
) -> tuple[int, int]:
    """Greedy one-to-one matching by IoU: (truth boxes matched, found boxes left unmatched)."""
    left = [np.asarray(f, dtype=np.float64) for f in found]
    hits = 0
    for t in truth:
        if not left:
            break
        scores = iou(t, np.stack(left))
        best = int(scores.argmax())
        if scores[best] >= min_iou:
            hits += 1
            left.pop(best)
    return hits, len(left)


def nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, min_iou: float = 0.5
) -> list[int]:
    """Per-class greedy non-maximum suppression; indices kept, best first. Each kept box
    suppresses the lower-scored boxes of its class that overlap it by `min_iou` or more,
    in one array operation (a noisy head yields thousands of boxes)."""
    order = np.argsort(-scores)
    ranked, kinds = np.asarray(boxes)[order], np.asarray(classes)[order]
    alive = np.ones(len(order), dtype=bool)
    keep: list[int] = []
    for k in range(len(order)):
        if not alive[k]:
            continue
        keep.append(int(order[k]))
        rest = k + 1 + np.flatnonzero(alive[k + 1 :] & (kinds[k + 1 :] == kinds[k]))
        if rest.size:
            overlap = iou(ranked[k], ranked[rest])
            alive[rest[~(overlap < min_iou)]] = False
    return keep


def db_boxes(
    prob: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.5, unclip: float = 1.6
) -> list[tuple[float, float, float, float]]:
    """Axis-aligned text boxes from a DB probability map [H, W], as RapidOCR post-processes
    PP-OCR det (binarize at `thresh`, keep regions whose mean score is over `box_thresh`,
    grow each by area * unclip / perimeter)."""
    from scipy import ndimage

    labels, count = ndimage.label(prob > thresh)
    out = []
    for k, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        ys, xs = region
        h, w = ys.stop - ys.start, xs.stop - xs.start
        if min(h, w) < 3 or float(prob[region][labels[region] == k].mean()) < box_thresh:
            continue
        d = h * w * unclip / (2 * (h + w))
        out.append((xs.start - d, ys.start - d, xs.stop + d, ys.stop + d))
    return out


def picodet_boxes(
    outputs: Sequence[np.ndarray],
    size: tuple[int, int],
    strides: Sequence[int] = (8, 16, 32, 64),
    threshold: float = 0.5,
) -> list[tuple[int, tuple[float, float, float, float]]]:
    """(class, box) per detection from PicoDet's heads: the first half of `outputs` are class
    scores [1, N, C] per stride, the second half box distributions [1, N, 4 * bins]
    (distribution focal loss); then NMS, as RapidLayout's PicoDetPostProcess does."""
    height, width = size
    half = len(outputs) // 2
    boxes, classes, scores = [], [], []
    for stride, score, dist in zip(strides, outputs[:half], outputs[half:], strict=True):
        score, dist = score[0], dist[0]
        cols, rows = int(np.ceil(width / stride)), int(np.ceil(height / stride))
        xs, ys = np.meshgrid(np.arange(cols), np.arange(rows))
        cx, cy = (xs.ravel() + 0.5) * stride, (ys.ravel() + 0.5) * stride
        keep = score.max(axis=1) > threshold  # the distributions of these anchors only
        bins = dist.shape[-1] // 4
        d = dist[keep].reshape(-1, bins)
        d = np.exp(d - d.max(axis=1, keepdims=True))
        d = (d / d.sum(axis=1, keepdims=True) * np.arange(bins)).sum(axis=1).reshape(-1, 4) * stride
        cx, cy = cx[keep], cy[keep]
        boxes.append(np.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], axis=1))
        classes.append(score[keep].argmax(axis=1))
        scores.append(score[keep].max(axis=1))
    b, c, s = np.concatenate(boxes), np.concatenate(classes), np.concatenate(scores)
    return [(int(c[i]), tuple(float(v) for v in b[i])) for i in nms(b, s, c)]  # type: ignore[misc]
