"""Run the ingest service: ``python -m services.ingest`` (port from INGEST_PORT, default 8001)."""

from services.ingest.settings import get_settings
from shared.web import serve

serve("services.ingest.app:create_app", get_settings())
