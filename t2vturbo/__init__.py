"""t2vturbo: distil a few-step text-to-video student from a diffusion teacher."""

__version__ = "0.1.0"
