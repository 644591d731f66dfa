"""Encrypted container images: the ocicrypt key provider and the ``inclavare image`` tooling."""
