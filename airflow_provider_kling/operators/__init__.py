"""The submit operator (``kling.KlingSubmitVideoOperator``) and its ledger (``_ledger.py``)."""
