"""Run the profile service: ``python -m services.profile`` (port from PROFILE_PORT, default 8002)."""

from services.profile.settings import get_settings
from shared.web import serve

serve("services.profile.app:create_app", get_settings())
