"""deepresolve-captum: DeepResolve for PyTorch/Captum."""

__version__ = "0.1.0"
