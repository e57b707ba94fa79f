"""The ground floor every layer may import; it imports nothing of shoptag's: settings, errors, file helpers."""
