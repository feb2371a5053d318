"""Training and evaluation of SONA-Net: datasets, sampler, losses, trainer, evaluation, and
the reproduction of the paper's tables (the ``sona`` command line that drives them is ``cli``)."""
