"""Quality prediction (soft sensors): predict a product-quality value from process readings.

- :mod:`~models.quality.protocol`: the ``QualityPredictor`` protocol, rows with full history
- :mod:`~models.quality.linear`: ridge and PLS over lagged readings (numpy)
- :mod:`~models.quality.neural`: MLP on current readings, 1-D conv and LSTM over a window
- :mod:`~models.quality.conformal`: split-conformal intervals, updated online
- :mod:`~models.quality.training`: time-ordered split, normalisation, hold-out metrics
- :mod:`~models.quality.artifact`: ``QualityModel`` (safetensors + JSON, content hash)
"""
