"""Ways in: each translates its wire format to servekit.types and calls the DataPlane."""
