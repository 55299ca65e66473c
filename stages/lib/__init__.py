"""Code shared by the stages: params, files, MNIST, models, plotting."""
