"""Dataset condensation with data parameterization: containers x objectives x evaluation protocols."""
__version__ = "0.1.0"
