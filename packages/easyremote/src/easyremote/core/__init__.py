"""Compatibility namespace for code written against EasyRemote's original layout."""
