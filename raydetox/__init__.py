"""raydetox: Ray-distributed curriculum and decoding sweeps for seq2seq text detoxification."""

__version__ = "0.1.0"
