"""Plain-PyTorch GAN core: models, training loop, config. No Dagster imports."""
