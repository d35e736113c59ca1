"""Example plug-ins (strategies, models) that users copy; the README walks through them."""
