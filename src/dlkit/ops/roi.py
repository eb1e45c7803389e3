"""RoI pooling and RoI align: a fixed-size feature map for every region of interest (Notes: 002 §4.3.2, 003 §6).

A region (x1, y1, x2, y2) in image pixels is mapped onto a feature map of stride s by `spatial_scale` = 1/s and cut
into an output_h x output_w grid of bins.

RoI pooling (Fast R-CNN) quantises twice: the region's corners are rounded to feature cells, and bin i of a region
of h cells covers cells floor(i h / output_h) .. ceil((i + 1) h / output_h) - 1; each bin is the maximum of its
cells (an empty bin is 0).

RoI align (Mask R-CNN) does not round: bin i covers [y1 + i b, y1 + (i + 1) b) with b = h / output_h, and its value
is the mean of `sampling_ratio` x `sampling_ratio` bilinearly interpolated points at the centres of a regular grid
inside the bin (`sampling_ratio` <= 0: ceil(b) points per axis, adaptive). `aligned=True` shifts the region by half
a cell, so that pixel centres line up (the continuous coordinate of cell j is j + 0.5); the legacy `aligned=False`
also makes regions at least one cell wide. A point more than one cell outside the map contributes 0; inside, the
interpolation clamps to the border cells.

Both match `torchvision.ops.roi_pool` / `roi_align` (forward and backward; the tests compare them). Regions are
[K, 5] rows (batch index, x1, y1, x2, y2) or a list of [L_i, 4] boxes, one tensor per image. dlkit's computation is
vectorised over regions, bins and sampling points (the regions are processed in blocks that bound memory), and
backward is autograd through the gathers.

`impl` chooses who computes: "dlkit" (the code here), "torchvision" (its compiled kernel of the same computation,
which loops over regions without materialising their windows: on Faster R-CNN's 1000 proposals of an 800-pixel image
it takes 0.06 s where the gathers take 6 s, benchmarks/bench_faster_rcnn.py), or "auto" (the default: torchvision's
kernel for float32/float64 inputs when torchvision imports, dlkit's otherwise). The tests hold both equal.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import ConfigError

BLOCK_ELEMENTS = 1 << 24  # gathered values per block of regions (64 MiB of float32)
IMPLS = ("auto", "dlkit", "torchvision")


def _kernel(name: str, impl: str, input: Tensor):
    """torchvision's compiled `name` when `impl` asks for it ("auto": float32/float64 inputs, torchvision
    importable), else None (dlkit's computation)."""
    if impl not in IMPLS:
        raise ConfigError(f"impl must be one of {list(IMPLS)}; got {impl!r}")
    if impl == "dlkit" or (impl == "auto" and input.dtype not in (torch.float32, torch.float64)):
        return None
    try:
        import torchvision.ops
    except ImportError:
        if impl == "torchvision":
            raise ConfigError("impl='torchvision' needs torchvision; install it (pip install torchvision, the version "
                              "pyproject.toml pins) or pass impl='dlkit'") from None
        return None
    return getattr(torchvision.ops, name)


def rois_tensor(boxes: Tensor | Sequence[Tensor], dtype: torch.dtype | None = None) -> Tensor:
    """[K, 5] rows (batch index, x1, y1, x2, y2) from such a tensor or from a list of [L_i, 4] boxes per image."""
    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ConfigError(f"RoIs as one tensor must be [K, 5] (batch index, x1, y1, x2, y2); got "
                              f"{tuple(boxes.shape)}. Pass a list of [L, 4] boxes per image instead")
        return boxes if dtype is None else boxes.to(dtype)
    parts = []
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.shape[1] != 4:
            raise ConfigError(f"boxes of image {i} must be [L, 4] (x1, y1, x2, y2); got {tuple(b.shape)}")
        parts.append(torch.cat([torch.full((len(b), 1), float(i), dtype=b.dtype, device=b.device), b], dim=1))
    if not parts:
        raise ConfigError("roi_pool / roi_align got an empty list of boxes: give one [L, 4] tensor per image")
    rois = torch.cat(parts)
    return rois if dtype is None else rois.to(dtype)


def _check(input: Tensor, rois: Tensor, output_size) -> tuple[int, int]:
    if input.dim() != 4:
        raise ConfigError(f"RoI operators take feature maps [N, C, H, W]; got {tuple(input.shape)}")
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if oh < 1 or ow < 1:
        raise ConfigError(f"output_size must be positive; got {output_size}")
    if len(rois) and (rois[:, 0].min() < 0 or rois[:, 0].max() >= input.shape[0]):
        raise ConfigError(f"RoI batch indices must be in 0..{input.shape[0] - 1}; got "
                          f"{rois[:, 0].min().item():g}..{rois[:, 0].max().item():g}")
    return int(oh), int(ow)


def _blocks(k: int, per_roi: int):
    """Slices of at most BLOCK_ELEMENTS // per_roi regions."""
    step = max(1, BLOCK_ELEMENTS // max(per_roi, 1))
    return (slice(i, min(i + step, k)) for i in range(0, k, step))


def _round_half_away(x: Tensor) -> Tensor:
    """C's round(): halves away from zero (torch.round rounds halves to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def roi_pool(input: Tensor, boxes: Tensor | Sequence[Tensor], output_size: int | tuple[int, int],
             spatial_scale: float = 1.0, impl: str = "auto") -> Tensor:
    """Fast R-CNN's RoI max pooling: [K, C, output_h, output_w] (module docstring). Notes: 002 §4.3.2."""
    rois = rois_tensor(boxes, input.dtype)
    oh, ow = _check(input, rois, output_size)
    kernel = _kernel("roi_pool", impl, input)
    if kernel is not None:
        return kernel(input, rois, (oh, ow), spatial_scale)
    _, c, h, w = input.shape
    out = input.new_zeros(len(rois), c, oh, ow)
    if len(rois) == 0:
        return out + 0 * input.sum()  # keeps the graph: an empty batch still back-propagates zeros
    corners = _round_half_away(rois[:, 1:] * spatial_scale).long()
    x1, y1, x2, y2 = corners.unbind(1)
    roi_w, roi_h = (x2 - x1 + 1).clamp(min=1), (y2 - y1 + 1).clamp(min=1)

    def bins(start: Tensor, size: Tensor, count: int, limit: int) -> tuple[Tensor, Tensor]:
        i = torch.arange(count, device=input.device, dtype=input.dtype)  # in the input's precision, as torchvision
        step = size.to(input.dtype)[:, None] / count
        lo = (torch.floor(i * step).long() + start[:, None]).clamp(0, limit)
        hi = (torch.ceil((i + 1) * step).long() + start[:, None]).clamp(0, limit)
        return lo, hi  # [K, count]: cells lo..hi-1

    hs, he = bins(y1, roi_h, oh, h)
    ws, we = bins(x1, roi_w, ow, w)
    bh, bw = max(int((he - hs).max()), 1), max(int((we - ws).max()), 1)
    rows = hs[:, :, None] + torch.arange(bh, device=input.device)  # [K, oh, bh]
    cols = ws[:, :, None] + torch.arange(bw, device=input.device)  # [K, ow, bw]
    row_ok, col_ok = rows < he[:, :, None], cols < we[:, :, None]
    cells = _channels_first(input)
    base = rois[:, 0].long() * (h * w)
    for s in _blocks(len(rois), c * oh * bh * ow * bw):
        idx = rows[s].clamp(max=h - 1)[:, :, :, None, None] * w + cols[s].clamp(max=w - 1)[:, None, None]
        k = idx.shape[0]
        vals = _gather(cells, base[s], idx).reshape(k, c, oh, bh, ow, bw)
        ok = (row_ok[s][:, :, :, None, None] & col_ok[s][:, None, None]).unsqueeze(1)
        vals = vals.masked_fill(~ok, float("-inf")).permute(0, 1, 2, 4, 3, 5).reshape(k, c, oh, ow, bh * bw)
        best = vals.max(dim=-1).values
        out[s] = torch.where(torch.isinf(best) & (best < 0), torch.zeros_like(best), best)
    return out


def _channels_first(input: Tensor) -> Tensor:
    """[N, C, H, W] as [C, N H W]: one row of cells per channel, so every region gathers from one matrix."""
    return input.permute(1, 0, 2, 3).reshape(input.shape[1], -1)


def _gather(cells: Tensor, base: Tensor, idx: Tensor) -> Tensor:
    """Values [K, C, M] of the cells idx [K, ...] (M per region, offsets inside an image) of the images whose first
    cell is base [K]; backward is index_add (no copy of the feature maps per region)."""
    k = idx.shape[0]
    flat = (idx.reshape(k, -1) + base[:, None]).reshape(-1)
    return cells.index_select(1, flat).reshape(cells.shape[0], k, -1).transpose(0, 1)


def _sample_axis(start: Tensor, bin_size: Tensor, grid: Tensor, count: int, g_max: int, limit: int):
    """Bilinear taps along one axis: low and high cell indices [K, count, G] and their weights, zero for
    sampling points beyond the region's grid or more than one cell outside the map."""
    i = torch.arange(count, device=start.device, dtype=start.dtype)[None, :, None]
    g = torch.arange(g_max, device=start.device, dtype=start.dtype)[None, None, :]
    grid_f = grid.to(start.dtype)[:, None, None]
    p = start[:, None, None] + i * bin_size[:, None, None] + (g + 0.5) * bin_size[:, None, None] / grid_f.clamp(min=1)
    used = (g < grid_f) & (p >= -1.0) & (p <= limit)
    p = p.clamp(min=0)
    low = p.floor().long()
    at_edge = low >= limit - 1
    low = torch.where(at_edge, torch.full_like(low, limit - 1), low)
    high = torch.where(at_edge, low, low + 1)
    p = torch.where(at_edge, low.to(p.dtype), p)
    frac = p - low.to(p.dtype)
    zero = torch.zeros_like(frac)
    return low, high, torch.where(used, 1 - frac, zero), torch.where(used, frac, zero)


def roi_align(input: Tensor, boxes: Tensor | Sequence[Tensor], output_size: int | tuple[int, int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False,
              impl: str = "auto") -> Tensor:
    """Mask R-CNN's RoI align: [K, C, output_h, output_w], the mean of bilinear samples per bin (module
    docstring). Notes: 002 §4.3.2."""
    rois = rois_tensor(boxes, input.dtype)
    oh, ow = _check(input, rois, output_size)
    kernel = _kernel("roi_align", impl, input)
    if kernel is not None:
        return kernel(input, rois, (oh, ow), spatial_scale, sampling_ratio, aligned)
    _, c, h, w = input.shape
    if len(rois) == 0:
        return input.new_zeros(0, c, oh, ow) + 0 * input.sum()
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale - offset).unbind(1)
    rw, rh = x2 - x1, y2 - y1
    rw = rw if aligned else rw.clamp(min=1.0)
    rh = rh if aligned else rh.clamp(min=1.0)
    bin_h, bin_w = rh / oh, rw / ow
    if sampling_ratio > 0:
        gh = gw = torch.full((len(rois),), sampling_ratio, device=input.device)
    else:
        gh, gw = torch.ceil(bin_h).long(), torch.ceil(bin_w).long()  # <= 0 for an empty aligned region: no point
    gh_max, gw_max = max(int(gh.max()), 1), max(int(gw.max()), 1)
    # bilinear sampling is separable: bin (i, j) = sum_hw A_y[i, h] x[h, w] A_x[j, w], the taps of all its sampling
    # points (and the mean over them) folded into one row- and one column-interpolation matrix, each restricted to
    # the window of rows (columns) the region touches
    a_y, r0 = _interpolation_window(*_sample_axis(y1, bin_h, gh, oh, gh_max, h), gh)  # [K, oh, H_win], [K]
    a_x, c0 = _interpolation_window(*_sample_axis(x1, bin_w, gw, ow, gw_max, w), gw)  # [K, ow, W_win], [K]
    hw, ww = a_y.shape[-1], a_x.shape[-1]
    rows = (r0[:, None] + torch.arange(hw, device=input.device)).clamp(max=h - 1)  # padding rows get weight 0
    cols = (c0[:, None] + torch.arange(ww, device=input.device)).clamp(max=w - 1)
    cells = _channels_first(input)
    base = rois[:, 0].long() * (h * w)
    out = []
    for s in _blocks(len(rois), c * hw * ww):
        window = _gather(cells, base[s], rows[s][:, :, None] * w + cols[s][:, None, :]).reshape(-1, c, hw, ww)
        out.append(a_y[s][:, None] @ (window @ a_x[s][:, None].transpose(-1, -2)))  # [k, C, oh, ow]
    return torch.cat(out)


def _interpolation_window(low: Tensor, high: Tensor, w_low: Tensor, w_high: Tensor,
                          grid: Tensor) -> tuple[Tensor, Tensor]:
    """([K, count, size], [K]): row i holds the mean over bin i's sampling points of their two bilinear taps, on
    the cells start .. start + size - 1 of each region (size: the widest region's span)."""
    k, count, _ = low.shape
    start = low.reshape(k, -1).min(dim=1).values
    span = int((high.reshape(k, -1).max(dim=1).values - start).max()) + 1
    scale = 1.0 / grid.clamp(min=1).to(w_low.dtype)[:, None, None]
    m = w_low.new_zeros(k, count, span)
    m.scatter_add_(2, low - start[:, None, None], w_low * scale)
    m.scatter_add_(2, high - start[:, None, None], w_high * scale)
    return m, start


def _output_size(output_size) -> tuple[int, int]:
    return (output_size, output_size) if isinstance(output_size, int) else (int(output_size[0]),
                                                                           int(output_size[1]))


class RoIPool(torch.nn.Module):
    """`roi_pool` as a module (Fast R-CNN's RoI pooling layer)."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float, impl: str = "auto"):
        super().__init__()
        self.output_size, self.spatial_scale, self.impl = _output_size(output_size), float(spatial_scale), impl

    def forward(self, input: Tensor, rois: Tensor | Sequence[Tensor]) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale, self.impl)


class RoIAlign(torch.nn.Module):
    """`roi_align` as a module (Mask R-CNN's RoI align layer)."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float, sampling_ratio: int = -1,
                 aligned: bool = False, impl: str = "auto"):
        super().__init__()
        self.output_size, self.spatial_scale = _output_size(output_size), float(spatial_scale)
        self.sampling_ratio, self.aligned, self.impl = int(sampling_ratio), bool(aligned), impl

    def forward(self, input: Tensor, rois: Tensor | Sequence[Tensor]) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned,
                         self.impl)

