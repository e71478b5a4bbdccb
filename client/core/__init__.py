"""The client library: transport (HTTP/gRPC), the retrying request loop, images, errors, served contract."""
