"""Running untrusted submissions: isolation tiers, the worker, and the wire between them."""

from grader.sandbox.launchers import Launcher, Limits, probe

__all__ = ["Launcher", "Limits", "probe"]
