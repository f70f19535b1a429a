"""Dataflows: they only wire the steps that operators/ implements."""
