"""The WeChat edge: the callback endpoint, its runtime, and the work after the answer."""

from .callback import routes
from .runtime import RUNTIME, WechatRuntime, run_worker, runtime_context

__all__ = ["RUNTIME", "WechatRuntime", "routes", "run_worker", "runtime_context"]
