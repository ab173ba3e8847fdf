"""The one ``Athena`` object of the example app (bound to apps with ``init_app``)."""

from flask_athena import Athena

athena = Athena()
