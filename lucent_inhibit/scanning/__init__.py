"""Scanning a dataset for one feature's maximally exciting, inhibiting and tense images (Hamblin et al.
2024; SPEC 2.2).

``run`` (:func:`scan`: one process, or the ranks of ``torchrun`` through ``ranks``), ``plan`` (the checked
plan and its chunk loop), ``store`` (the hash-checked, resumable checkpoint folder), ``stats`` (per-image
totals from a batch's attribution), ``merge`` (shards into one scan), ``result`` (:class:`ScanResult`) and
``figures`` (P-vs-N scatter, MEI / MII / MTI grids, signed overlays).
"""
from .figures import plot_image_grid, plot_scan_overlay, plot_scan_scatter, plot_signed_overlay, save_scan_figures
from .merge import merge_scans
from .result import DEFAULT_SCORE, GRANULARITIES, NORMS, SCAN_SCORES, NotInScanError, ScanResult
from .run import scan

__all__ = ["DEFAULT_SCORE", "GRANULARITIES", "NORMS", "NotInScanError", "SCAN_SCORES", "ScanResult", "merge_scans",
           "plot_image_grid", "plot_scan_overlay", "plot_scan_scatter", "plot_signed_overlay", "save_scan_figures",
           "scan"]
