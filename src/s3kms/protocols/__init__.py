"""The wire protocols: each turns requests into calls on the KeyService and renders its errors."""
