"""The event bus: how one service's recorded case events reach the other services.

``port`` defines the publisher/subscriber contract, ``kafka`` is the production adapter and
``inprocess`` the embedded one for ``make run`` without a broker. Both pass
``tests/contract/test_bus_contract.py``. Importing this package opens no connection.
"""
