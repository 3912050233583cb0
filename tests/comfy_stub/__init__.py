"""Test support for FaceMagic's ComfyUI nodes: a ComfyUI stand-in and workflow helpers (see README.md)."""
