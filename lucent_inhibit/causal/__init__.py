"""The causal test of maximally tense images (Hamblin et al. 2024): remove the inhibitory elements at the
attribution layer and re-run the forward pass (``disinhibition``), and the inhibitor dictionary: which
channels carry the MTIs' inhibition, each tested by removing it (``inhibitors``), and the model-parameter
randomization test of both (``randomization``, Adebayo et al. 2018). ``removal`` holds what the first two share,
``figures`` their figures.
"""
from .disinhibition import Disinhibition, disinhibit
from .figures import plot_disinhibition, plot_inhibitors, plot_randomization
from .inhibitors import InhibitorDictionary, inhibitor_dictionary
from .randomization import RandomizationCascade, randomization_cascade
from .removal import BASELINES, layer_statistics

__all__ = ["BASELINES", "Disinhibition", "InhibitorDictionary", "RandomizationCascade", "disinhibit",
           "inhibitor_dictionary", "layer_statistics", "plot_disinhibition", "plot_inhibitors", "plot_randomization",
           "randomization_cascade"]
