"""The trigger that polls a Kling task in the triggerer (``kling.KlingTaskTrigger``)."""
