"""Training and evaluation of SONA-Net, and the ``sona`` command line."""
