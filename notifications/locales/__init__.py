"""Per-locale SMS catalogs (en.yaml, fr.yaml, zh.yaml), read by notifications.messages."""
