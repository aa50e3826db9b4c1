"""The orchestration layer: wires ``stream``, ``models`` and ``alerts`` into the product.

``settings`` composes each room's config; ``monitor`` is the pure core (window → score →
threshold → alert); ``runloop`` runs it on Kafka; ``backtest`` replays files through it;
``commands``, ``simulate``, ``demo`` and ``cli`` are the command line. Nothing below this
package imports it (import-linter checks that in ``make test``).
"""
