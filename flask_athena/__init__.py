"""flask_athena: Nevow Athena's live elements for Flask, over SSE and JSON POSTs."""

from __future__ import annotations

from .element import LiveElement as LiveElement
from .errors import AthenaError as AthenaError
from .errors import CallCancelled as CallCancelled
from .errors import CallTimeout as CallTimeout
from .errors import ConnectionLost as ConnectionLost
from .errors import RemoteError as RemoteError
from .extension import Athena as Athena
from .page import LivePage as LivePage
from .registry import expose as expose
from .remote import RemoteCall as RemoteCall

__version__ = "0.1.0.dev0"
