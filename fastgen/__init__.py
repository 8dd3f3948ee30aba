"""fastgen: the paper's MLP GAN and VAE on MNIST, fast on a GPU and correct on a CPU."""
__version__ = "0.1.0"

from .checkpoint import load  # noqa: E402
from .comparison import CompareConfig, compare  # noqa: E402
from .config import TrainConfig  # noqa: E402
from .errors import DataError, FastgenError  # noqa: E402
from .evaluation import evaluate  # noqa: E402
from .models import VAE, Discriminator, Generator  # noqa: E402
from .nn import LinearLeakyReLUDropout  # noqa: E402
from .training import train  # noqa: E402

__all__ = ["VAE", "CompareConfig", "DataError", "Discriminator", "FastgenError", "Generator",
           "LinearLeakyReLUDropout", "TrainConfig", "compare", "evaluate", "load", "train", "__version__"]
