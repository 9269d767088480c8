"""Separation: the latent separator, its objectives, training and chunked inference."""
