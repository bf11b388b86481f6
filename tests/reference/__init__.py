"""PyTorch reference implementations used only by the equivalence tests (needs ``torch``)."""
