"""Shared absl flag definitions for the experiments.

Importing a module here defines its flags once; experiments import the groups
they use, e.g. ``from flags import privacy as privacy_flags``.
"""
