"""The reference node: MicroPython firmware for a lab kit (``edulink`` is its protocol module, ``kitnode``
its logic, ``slots`` its A/B firmware slots, ``main`` the entry point on a board or under CPython).
Copy ``edulink.py``, ``slots.py``, ``kitnode.py`` and ``main.py`` flat onto the board."""
