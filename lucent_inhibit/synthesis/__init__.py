"""Images synthesised with the papers' objectives, inside Lucent's ``render_vis``.

``objectives`` (Lucent objectives: cosdot, spatial cosdot, feature pairs, the tense objective, signed
attribution targets and masks, the latent seed regulariser), ``param`` (seeded Fourier / phase
parameterizations) and ``transform`` (box crops and noise) are the parts; ``accentuation`` (paper 003),
``inversion`` (+/- attribution inversions and accentuations, paper 000) and ``tense`` (maximally tense
synthesis) are the methods; ``figures`` draws their results.
"""
from .accentuation import Accentuation, accentuate
from .figures import plot_accentuation, plot_inversions, plot_tense
from .inversion import InversionResult, inversions
from .tense import TenseResult, tense_image

__all__ = ["Accentuation", "InversionResult", "TenseResult", "accentuate", "inversions", "plot_accentuation",
           "plot_inversions", "plot_tense", "tense_image"]
