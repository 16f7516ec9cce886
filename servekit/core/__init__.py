"""The protocol-neutral core. Never imports a transport (starlette, grpc)."""
