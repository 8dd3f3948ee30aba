"""The fused layers (`layers`), the paper's three networks (`networks`) and their weights files (`weights`)."""

from fastgen.models.layers import LinearLeakyReLUDropout, Reparameterize
from fastgen.models.networks import IMAGE_PIXELS, IMAGE_SHAPE, VAE, Discriminator, Generator
from fastgen.models.weights import load

__all__ = ["IMAGE_PIXELS", "IMAGE_SHAPE", "VAE", "Discriminator", "Generator", "LinearLeakyReLUDropout", "Reparameterize", "load"]
