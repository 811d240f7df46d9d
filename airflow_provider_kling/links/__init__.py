"""The extra links of the Kling operators and sensor (``kling.py``)."""
