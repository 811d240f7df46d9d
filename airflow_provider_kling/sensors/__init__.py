"""The sensor that waits for a Kling task (``kling.KlingTaskSensor``)."""
