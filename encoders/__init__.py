"""Encoders: the DAC-VAE audio codec, the PE-AV towers, audio I/O and prompt preprocessing."""
