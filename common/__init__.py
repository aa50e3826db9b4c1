"""The bottom layer: the few words every room of plantwatch shares.

``stream``, ``models`` and ``alerts`` do not import each other; what they must agree on
(timestamps on the wire, the reason codes that label rejected messages, the delivery loop
of a Kafka producer) lives here, and this package imports none of them.
"""
