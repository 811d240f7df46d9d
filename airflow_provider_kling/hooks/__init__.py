"""The hook (``kling.KlingHook``) and its private parts: the only package that speaks HTTP."""
