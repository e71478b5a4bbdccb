"""Rolling a live Triton from one repository spec to another without a failed request."""
