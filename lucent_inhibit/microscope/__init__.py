"""The inhibition microscope: every unit of one or more layers, browsable, with what inhibits it (Hamblin et
al. 2024, section 2, for whole layers; in the spirit of OpenAI Microscope, Schubert et al. 2020, which shows
what excites each unit).

:func:`build_microscope` (also ``microscope`` here; ``lucent_inhibit.microscope`` is this package) runs one census per layer (:func:`~lucent_inhibit.layer_census`: f, P, N and tension of
every unit on every image, resumable) and splits each unit's attribution on its maximally tense images by
channel of its attribution layer (its top inhibitory and excitatory channels with their share of N and P and the
change of the unit when each is removed on its MTIs), and renders every unit's and listed channel's feature
visualization in batches.
:class:`Microscope` holds the result; :func:`write_microscope_site` writes it as a static site (an index table of every
unit, one page per unit; a channel of a layer also in the microscope links to its own page).

Modules: ``result`` (:class:`Microscope`), ``build`` (:func:`microscope`), ``channels`` (the channel split and
removal), ``visuals`` (channels' top images and feature visualizations), ``figures``, ``site``.
"""
from .build import MAX_UNITS, build_microscope, microscope
from .channels import channel_totals, removal_effects
from .figures import plot_microscope, plot_unit
from .result import GROUPS, QUIET_BAND, Microscope
from .site import write_microscope_site

__all__ = ["GROUPS", "MAX_UNITS", "Microscope", "QUIET_BAND", "build_microscope", "channel_totals",
           "microscope", "plot_microscope", "plot_unit", "removal_effects", "write_microscope_site"]
