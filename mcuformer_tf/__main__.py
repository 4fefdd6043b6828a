"""`python -m mcuformer_tf` runs the `mcuformer-tf` command line."""
from mcuformer_tf.cli import main

main(prog_name="mcuformer-tf")
