"""Learnable digital cone-adapted shearlet filters (after Kutyniok, Lim, Reisenhofer, ShearLab).

Two learned pieces define the whole system:

* ``lowpass`` ``h``: a 1D low-pass filter (9 taps, ``sum h = 1``), DTFT ``H``. Its mirror
  ``g[n] = (-1)^n h[n]`` (DTFT ``G(w) = H(w + pi)``) is the wavelet high-pass.
* ``fan`` ``P``: a 2D directional fan filter (17 x 17, ``||P||_1 = 1``) whose pass band is the
  cone ``|w_b| <= |w_a|`` around the main axis ``a``.

For a cone with main frequency axis ``a`` (``x`` for the horizontal cone, ``y`` for the
vertical one; ``b`` is the other axis), scale ``j`` and shear ``k`` at shear level ``l``, the
filter is the FIR filter obtained by the digital operations of the construction:

1. upsample ``P`` by ``u = 2^(l + 1)`` along ``b`` and low-pass along ``b`` with
   ``L_l(w) = prod_{q=0..l} H(2^q w)`` (cut-off ``pi / u``): a wedge ``|w_b| <= |w_a| / u``;
2. shear it by ``k / 2^l`` digitally: upsample by ``2^l`` along ``a``, shift each row ``r``
   (of the upsampled grid) by ``k r`` along ``a``, interpolate with
   ``I_l(w) = prod_{q=0..l-1} H(2^q w)``, downsample;
3. multiply by the 1D band-pass of scale ``j`` along ``a``:
   ``B_j(w) = G(2^(J-1-j) w) prod_{q=0..J-2-j} H(2^q w)`` (``j = J - 1`` is the finest).

In the Fourier domain (every factor is a trigonometric polynomial, so the result is an FIR
filter and sampling it on any DFT grid is exact zero-padding)::

    Psi(w) = B_j(w_a) sum_{m=0..2^l-1} I_l((w_a + 2 pi m) / 2^l)
                 P^(w_a, u (w_b - k (w_a + 2 pi m) / 2^l)) L_l(w_b - k (w_a + 2 pi m) / 2^l)

with ``P^`` the DTFT of ``P`` (indexed ``P[n_b, n_a]``); the ``m`` terms are the aliases of the
downsampling. The vertical cone uses the same ``h`` and ``P`` with the axes swapped.
With 2 scales at shear level 1 this gives 2 cones x 2 scales x 5 shears = 20 filters. The
coarse low-pass part of the system (the 2D scaling function
``Phi(w) = L(w_x) L(w_y)``, ``L(w) = prod_{q=0..J-1} H(2^q w)``, pass band about
``|w| < pi / 2^J``) is appended as the last filter when ``lowpass_expert`` is set, so that an
expert also models (and denoises) the coarse band; by default it carries no expert and is
not built.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from recon_core.prior.filter_bank import FilterBank, centred_positions, dtft_1d, fourier_matrix


def default_lowpass(taps: int = 9) -> Tensor:
    """Maximally flat half-band low-pass ``(-1, 0, 9, 16, 9, 0, -1) / 32`` zero-padded to ``taps``."""
    core = torch.tensor([-1.0, 0.0, 9.0, 16.0, 9.0, 0.0, -1.0]) / 32.0
    if taps < core.numel() or taps % 2 == 0:
        raise ValueError(f"lowpass taps must be odd and >= {core.numel()}, got {taps}")
    pad = (taps - core.numel()) // 2
    return torch.nn.functional.pad(core, (pad, pad))


def default_fan(size: int = 17) -> Tensor:
    """Fan filter passing the cone ``|w_b| <= |w_a|``: a Hamming-windowed ideal diamond
    low-pass, ``d[n] = sinc((n_a + n_b) / 2) sinc((n_a - n_b) / 2) / 2``, modulated by
    ``(-1)^n_a`` (which moves the diamond to the cone around ``w_a = pi``), l1-normalised."""
    if size % 2 == 0:
        raise ValueError(f"fan size must be odd, got {size}")
    n = centred_positions(size, torch.device("cpu"), torch.float64)
    n_b, n_a = torch.meshgrid(n, n, indexing="ij")
    diamond = 0.5 * torch.sinc((n_a + n_b) / 2.0) * torch.sinc((n_a - n_b) / 2.0)
    window = torch.hamming_window(size + 2, periodic=False, dtype=torch.float64)[1:-1]
    fan = diamond * torch.outer(window, window) * torch.cos(torch.pi * n_a)
    return (fan / fan.abs().sum()).to(torch.float32)


TIGHT_FLOOR = 1e-8
"""Smallest frame weight ``sum |Psi_j|^2 + |Phi|^2`` divided by in the Parseval normalisation."""


class ShearletFilterBank(FilterBank):
    """Cone-adapted digital shearlets from a learned low-pass ``h`` and fan filter ``P``.

    Filter order: cone (horizontal ``a = x``, then vertical ``a = y``), scale (coarse to
    fine), shear ``k = -2^l .. 2^l``; then the low-pass ``Phi`` if ``lowpass_expert``.

    Gains ``eta_j = max |Psi_j|``. (The l2 norm, the true standard deviation of the response
    to unit white noise, is 3.6 to 7.2 times smaller, but the shearlets overlap in frequency:
    at large ``sigma`` the product of experts then scores noise with
    ``sum_j |Psi_j|^2 / eta_j^2``, which is about 1 in the covered band with ``max`` and up to
    about 100 with the l2 norm; measured DSM loss at the start of training: about 0.5 with
    ``max``, about 500 with the l2 norm.) ``PoGMDMConfig(gain="learned")`` replaces these gains
    by learned ones, initialised at ``max``.

    Args:
        num_scales: ``J``.
        shear_levels: shear level ``l`` of every scale (ShearLab's default ``ceil(j / 2)``).
        lowpass_taps: length of ``h`` (odd).
        fan_size: side of ``P`` (odd).
        lowpass_expert: also build the coarse low-pass filter ``Phi`` (last filter).
        tight: divide every filter by ``sqrt(sum_j |Psi_j|^2 + |Phi|^2)`` (ShearLab's dual
            frame weights), so that the system with ``Phi`` is a Parseval frame at any ``h, P``.
    """

    expert_radius = 0.5

    def __init__(
        self,
        num_scales: int = 2,
        shear_levels: tuple[int, ...] = (1, 1),
        lowpass_taps: int = 9,
        fan_size: int = 17,
        lowpass_expert: bool = False,
        tight: bool = False,
    ) -> None:
        super().__init__()
        self.tight = bool(tight)
        if len(shear_levels) != num_scales:
            raise ValueError(f"need one shear level per scale, got {shear_levels} for {num_scales} scales")
        self.num_scales = num_scales
        self.shear_levels = tuple(int(level) for level in shear_levels)
        self.lowpass_expert = bool(lowpass_expert)
        self.lowpass = nn.Parameter(default_lowpass(lowpass_taps))
        self.fan = nn.Parameter(default_fan(fan_size))

    @property
    def num_filters(self) -> int:
        return 2 * sum(2 ** (level + 1) + 1 for level in self.shear_levels) + int(self.lowpass_expert)

    def labels(self) -> list[str]:
        """One short label per filter, in the bank's order (for plots)."""
        names = []
        for cone in ("h", "v"):
            for scale, level in enumerate(self.shear_levels):
                for shear in range(-(2**level), 2**level + 1):
                    names.append(f"{cone} j{scale} k{shear:+d}/{2**level}")
        if self.lowpass_expert:
            names.append("low-pass")
        return names

    def _lowpass_product(self, omega: Tensor, levels: int) -> Tensor:
        """``prod_{q=0..levels-1} H(2^q omega)`` (complex, shaped like ``omega``)."""
        result = dtft_1d(self.lowpass, omega)
        for q in range(1, levels):
            result = result * dtft_1d(self.lowpass, omega * 2.0**q)
        return result

    def _bandpass(self, omega: Tensor, scale: int) -> Tensor:
        """``B_j(omega)``: the wavelet band-pass of scale ``j`` along the main axis."""
        octave = self.num_scales - 1 - scale
        band = dtft_1d(self.lowpass, omega * 2.0**octave + torch.pi)
        if octave > 0:
            band = band * self._lowpass_product(omega, octave)
        return band

    def _wedges(self, omega_a: Tensor, omega_b: Tensor, level: int) -> list[Tensor]:
        """Sheared wedges of one shear level, ``(len(omega_b), len(omega_a))`` each, ``k`` ascending."""
        upsampling = 2 ** (level + 1)
        positions = centred_positions(self.fan.shape[-1], self.fan.device, self.fan.dtype)
        fan = self.fan.to(torch.complex128 if self.fan.dtype == torch.float64 else torch.complex64)
        rows = fan @ fourier_matrix(omega_a, positions).T  # (n_b, N_a): DTFT along a per row
        basis_b = fourier_matrix(upsampling * omega_b, positions)  # (N_b, n_b)
        wedges = []
        for shear in range(-(2**level), 2**level + 1):
            # Row n_b of the upsampled fan moves by shear * u * n_b / 2^l samples along a.
            shift = positions.unsqueeze(-1) * omega_a * (shear * upsampling / 2**level)
            fan_hat = basis_b @ (rows * torch.complex(torch.cos(shift), torch.sin(shift)))
            alias_sum = torch.zeros_like(fan_hat)
            for alias in range(2**level):
                shifted_a = (omega_a + 2.0 * math.pi * alias) / 2**level
                interpolation = self._lowpass_product(shifted_a, level)
                wedge_axis = omega_b.unsqueeze(-1) - shear * shifted_a
                alias_sum = alias_sum + interpolation * self._lowpass_product(wedge_axis, level + 1)
            wedges.append(fan_hat * alias_sum)
        return wedges

    def _cone(self, omega_a: Tensor, omega_b: Tensor) -> list[Tensor]:
        wedges_by_level = {level: self._wedges(omega_a, omega_b, level) for level in set(self.shear_levels)}
        filters = []
        for scale, level in enumerate(self.shear_levels):
            band = self._bandpass(omega_a, scale)
            filters.extend(band * wedge for wedge in wedges_by_level[level])
        return filters

    def transfer(self, omega_y: Tensor, omega_x: Tensor) -> Tensor:
        horizontal = self._cone(omega_x, omega_y)
        vertical = [psi.T for psi in self._cone(omega_y, omega_x)]
        filters = torch.stack(horizontal + vertical)
        if not (self.lowpass_expert or self.tight):
            return filters
        scaling = self._lowpass_product(omega_y, self.num_scales).unsqueeze(-1) * self._lowpass_product(
            omega_x, self.num_scales
        )
        if self.lowpass_expert:
            filters = torch.cat([filters, scaling.unsqueeze(0)])
        if self.tight:
            # Parseval normalisation: sum_j |Psi_j|^2 + |Phi|^2 = 1 at every frequency.
            frame_weight = filters.abs().square().sum(dim=0)
            if not self.lowpass_expert:
                frame_weight = frame_weight + scaling.abs().square()
            filters = filters * torch.rsqrt(frame_weight.clamp(min=TIGHT_FLOOR))
        return filters

    def gains(self) -> Tensor:
        return self.max_gain()

    @torch.no_grad()
    def project_(self) -> None:
        """``sum h = 1`` (Euclidean projection onto the hyperplane) and ``||P||_1 = 1``."""
        self.lowpass.sub_((self.lowpass.sum() - 1.0) / self.lowpass.numel())
        self.fan.div_(self.fan.abs().sum().clamp(min=torch.finfo(self.fan.dtype).tiny))
