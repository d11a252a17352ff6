"""Run the segmentation service: ``python -m services.segmentation`` (port: SEGMENTATION_PORT, 8003)."""

from services.segmentation.settings import get_settings
from shared.web import serve

serve("services.segmentation.app:create_app", get_settings())
