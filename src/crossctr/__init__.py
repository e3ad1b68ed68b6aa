"""crossctr: cross-domain click-through-rate prediction (CNAN-AT and its baselines)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
