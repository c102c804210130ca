"""Compatibility namespace: ``easyremote.core.nodes.client`` (functional mode)."""
