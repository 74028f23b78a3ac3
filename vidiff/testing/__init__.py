"""Test and recipe scaffolding: tiny Stable-Diffusion-shaped models built from nothing, and the real U-Net configs.

Nothing in the runtime package imports this; tests, scripts and the tiny default's recipe do.
"""
