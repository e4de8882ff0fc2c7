"""Model loaders: each task gets an object that turns inputs into logits."""
