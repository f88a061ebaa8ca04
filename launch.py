"""``python launch.py --config=configs/fashion_mnist.py --workdir=DIR``: the ``tmu-jax`` command."""
from tmu_jax import cli
cli.main()
